//! A saga definition as a Mermaid flowchart: steps in order, compensations as dashed edges back
//! to their step, conditional steps as decisions with one sub-graph per alternative.

use std::fmt::Write;

use super::{SagaDefinition, StepDefinition};

impl<C> SagaDefinition<C> {
    /// The step graph as a Mermaid `flowchart TD`.
    pub fn to_mermaid(&self) -> String {
        let mut chart = String::from("flowchart TD\n");
        let start = "start";
        let _ = writeln!(chart, "    {start}([\"{}\"])", self.name());
        let end = render(&mut chart, self, "s", start, 1);
        let _ = writeln!(chart, "    {end} --> finish([\"end\"])");
        chart
    }
}

/// Writes the steps of `saga` with node ids prefixed `prefix`, after node `from`; returns the last
/// node.
fn render<C>(
    chart: &mut String,
    saga: &SagaDefinition<C>,
    prefix: &str,
    from: &str,
    depth: usize,
) -> String {
    let indent = "    ".repeat(depth);
    let mut previous = from.to_owned();
    for (index, step) in saga.steps().iter().enumerate() {
        let id = format!("{prefix}{}", index + 1);
        let name = step.name();
        match step {
            StepDefinition::Local(local) => {
                let _ = writeln!(chart, "{indent}{id}[\"{name}<br/><i>local</i>\"]");
                let _ = writeln!(chart, "{indent}{previous} --> {id}");
                if let Some(handler) = &local.on_failure {
                    let _ = writeln!(chart, "{indent}{id}_undo[\"{}\"]", handler.name);
                    let _ = writeln!(chart, "{indent}{id} -. compensate .-> {id}_undo");
                }
                previous = id;
            }
            StepDefinition::Remote(remote) => {
                let _ = writeln!(chart, "{indent}{id}[/\"{name}<br/><i>remote</i>\"/]");
                let _ = writeln!(chart, "{indent}{previous} --> {id}");
                if let Some(handler) = &remote.on_failure {
                    let _ = writeln!(chart, "{indent}{id}_undo[/\"{}\"/]", handler.name);
                    let _ = writeln!(chart, "{indent}{id} -. compensate .-> {id}_undo");
                }
                previous = id;
            }
            StepDefinition::Conditional(conditional) => {
                let _ = writeln!(chart, "{indent}{id}{{\"{name}\"}}");
                let _ = writeln!(chart, "{indent}{previous} --> {id}");
                let join = format!("{id}_join");
                let mut branches = Vec::new();
                for (alternative_index, alternative) in conditional.alternatives.iter().enumerate()
                {
                    branches.push((
                        alternative.condition.name.to_owned(),
                        format!("{id}_if{}_", alternative_index + 1),
                        &alternative.saga,
                    ));
                }
                if let Some(saga) = &conditional.else_then {
                    branches.push(("else".to_owned(), format!("{id}_else_"), saga));
                }
                for (label, branch_prefix, saga) in branches {
                    let entry = format!("{branch_prefix}0");
                    let _ = writeln!(
                        chart,
                        "{indent}subgraph {branch_prefix}[\"{}\"]",
                        saga.name()
                    );
                    let _ = writeln!(chart, "{indent}    {entry}((\" \"))");
                    let last = render(chart, saga, &branch_prefix, &entry, depth + 1);
                    let _ = writeln!(chart, "{indent}end");
                    let _ = writeln!(chart, "{indent}{id} -- {label} --> {entry}");
                    let _ = writeln!(chart, "{indent}{last} --> {join}");
                }
                if conditional.else_then.is_none() {
                    let _ = writeln!(chart, "{indent}{id} -- otherwise --> {join}");
                }
                let _ = writeln!(chart, "{indent}{join}((\" \"))");
                previous = join;
            }
        }
    }
    previous
}
