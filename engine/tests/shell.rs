//! The tokio shell drives a node through async modules on (paused) time.

mod common;

use engine::executor::Relation;
use engine::mutation::ModuleDecl;
use engine::shell::{BoxFuture, Input, Module, ModuleError, MutationRequest, Report, run_node};
use engine::value::Value;
use engine::virt;
use std::sync::Arc;
use std::time::Duration;

struct Virtual {
    decl: ModuleDecl,
}

impl Module for Virtual {
    fn declare(&self) -> ModuleDecl {
        self.decl.clone()
    }
    fn handle(&self, req: MutationRequest) -> BoxFuture<Result<Report, ModuleError>> {
        let m = self
            .decl
            .mutations
            .iter()
            .find(|m| m.name == req.mutation)
            .cloned();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let m = m.ok_or_else(|| ModuleError(format!("unknown {}", req.mutation)))?;
            let reg = engine::registry::Registry::with_pxe();
            let mut report = Vec::new();
            for (url, _, to) in &m.mutates {
                let path = url.parse().unwrap();
                let v: Value = reg.parse_value(&path, to).unwrap();
                report.push((path, v));
            }
            Ok(report)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn shell_runs_module_calls_until_converged() {
    let (reg, g) = common::virtual_set();
    let e = common::engine(&reg, &g, Relation::All);
    let modules: Vec<Arc<dyn Module>> = vec![
        Arc::new(Virtual {
            decl: virt::power_module(),
        }),
        Arc::new(Virtual {
            decl: virt::boot_module(),
        }),
    ];
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let task = tokio::spawn(run_node(e, modules, rx));
    tx.send(Input::Cfg(common::booted_cfg(&reg, "n1")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(tx);
    let e = task.await.unwrap();
    assert!(e.is_converged());
    assert_eq!((e.dsc().phys_state, e.dsc().run_state), (2, 2));
}
