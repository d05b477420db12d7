//! Telling the changes of this node's task records as events
//! (`mesh_protocol::events::task` decides which): each record's last told
//! state is kept, and every write compares against it.

use mesh_protocol::TaskId;
use mesh_protocol::events::task::{self, Mark};

use super::Supervisor;
use crate::runtime::ContainerRuntime;

impl<R: ContainerRuntime> Supervisor<R> {
    /// Tells what changed in `id`'s record since it was last told; a record
    /// new here is only noted (its arrival is told where it was decided).
    pub(super) fn tell(&mut self, id: &TaskId) {
        let Some(r) = self.records.get(id) else {
            self.marks.remove(id);
            return;
        };
        if let Some(before) = self.marks.get(id)
            && let Some((kind, why)) = task::change(before, r)
        {
            self.cfg.events.emit(kind, id, why);
        }
        self.marks.insert(id.clone(), Mark::of(r));
    }

    /// Forgets the marks of records no longer held.
    pub(super) fn forget_marks(&mut self) {
        let records = &self.records;
        self.marks.retain(|id, _| records.contains_key(id));
    }
}
