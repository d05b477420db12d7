//! Pool instances: starting them up to a node's share, following each
//! until it exits, and retiring them (a shrinking pool, a removed or
//! redefined service).

use mesh_protocol::{CoreCount, ServiceName};
use tracing::{info, warn};

use super::{Backend, Instance, Started, Svc, backing_off, note_start};
use crate::runtime::ContainerRuntime;

impl<R: ContainerRuntime> Backend<R> {
    pub(super) fn scale_pool(&self, name: &ServiceName, want: &[u32]) {
        let (spec, start, stop) = {
            let mut state = self.lock();
            let Some(svc) = state.get_mut(name) else {
                return;
            };
            let retiring = svc.instances.iter().filter(|i| i.retiring).count();
            let have = (svc.containers as usize).saturating_sub(retiring);
            let start: Vec<u32> = if backing_off(svc) {
                Vec::new()
            } else {
                want.iter().skip(have).copied().collect()
            };
            svc.containers += start.len() as u32;
            // Too many: retire the least busy (idle ones go at once).
            let extra = have.saturating_sub(want.len());
            let mut active: Vec<&mut Instance> =
                svc.instances.iter_mut().filter(|i| !i.retiring).collect();
            active.sort_by_key(|i| i.conns);
            for i in active.into_iter().take(extra) {
                i.retiring = true;
            }
            let stop = sweep(svc);
            (svc.spec.clone(), start, stop)
        };
        self.discard_all(stop);
        for cores in start {
            let me = self.clone();
            let spec = spec.clone();
            tokio::spawn(async move {
                let Ok(cores) = CoreCount::new(cores) else {
                    me.freed(&spec.name, 1, 0);
                    return;
                };
                let result = me.start_ready(&spec, cores).await;
                if let Some(svc) = me.lock().get_mut(&spec.name) {
                    note_start(svc, &result);
                }
                match result {
                    Ok((started, probe)) => {
                        drop(probe);
                        info!(service = %spec.name, container = %started.name, "pool instance ready");
                        let watch = started.clone();
                        if let Some(svc) = me.lock().get_mut(&spec.name) {
                            svc.instances.push(Instance {
                                started,
                                conns: 0,
                                retiring: false,
                            });
                        }
                        me.released.notify_waiters();
                        me.watch_instance(spec.name.clone(), watch).await;
                    }
                    Err(_) => me.give_back(&spec.name, 1, 0),
                }
            });
        }
    }

    /// Follows a pool instance until it exits; then it is removed (the
    /// next tick starts a replacement).
    pub(super) async fn watch_instance(&self, name: ServiceName, started: Started) {
        let code = self.runtime.wait(&started.id).await;
        let was_ours = {
            let mut state = self.lock();
            match state.get_mut(&name) {
                Some(svc) => match svc
                    .instances
                    .iter()
                    .position(|i| i.started.id == started.id)
                {
                    Some(at) => {
                        svc.instances.remove(at);
                        svc.containers = svc.containers.saturating_sub(1);
                        true
                    }
                    None => false,
                },
                None => false,
            }
        };
        if was_ours {
            warn!(service = %name, container = %started.name, exit = ?code, "pool instance ended; a new one will replace it");
            self.discard(&started).await;
        }
    }

    /// Removes what a removed service no longer needs; forgets the service
    /// once nothing of it is left.
    pub(super) fn retire(&self, name: &ServiceName) {
        let gone = {
            let mut state = self.lock();
            let Some(svc) = state.get_mut(name).filter(|s| s.removed) else {
                return;
            };
            let mut gone: Vec<Started> = svc.warm.drain(..).map(|w| w.started).collect();
            svc.containers = svc.containers.saturating_sub(gone.len() as u32);
            for i in &mut svc.instances {
                i.retiring = true;
            }
            gone.extend(sweep(svc));
            if svc.containers == 0 && svc.conns == 0 && svc.warming == 0 && svc.queued == 0 {
                state.remove(name);
            }
            gone
        };
        self.discard_all(gone);
    }
}

/// Takes the retiring instances without connections out of `svc`, to be
/// removed.
pub(super) fn sweep(svc: &mut Svc) -> Vec<Started> {
    let (gone, kept): (Vec<Instance>, Vec<Instance>) = std::mem::take(&mut svc.instances)
        .into_iter()
        .partition(|i| i.retiring && i.conns == 0);
    svc.instances = kept;
    svc.containers = svc.containers.saturating_sub(gone.len() as u32);
    gone.into_iter().map(|i| i.started).collect()
}
