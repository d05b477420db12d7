//! The wait queue for tasks that have no cores yet, and the pure dispatch
//! decision: which queued tasks start now, on which cores.
//!
//! Order is priority (higher first), then arrival. The head of the queue is
//! never overtaken by a later task that happens to fit: a large task waits
//! for its cores instead of starving behind a stream of small ones. Tasks
//! waiting out a retry backoff step aside until their time comes, and so
//! do tasks larger than this host: they wait here, blocking nobody, until
//! the mover hands them to a node of the mesh that fits them.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::alloc::{AllocError, Allocation, CoreAllocator};
use crate::ids::TaskId;
use crate::resources::CoreCount;

/// What the queue needs to know about a waiting task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    pub id: TaskId,
    pub cores: CoreCount,
    pub priority: i32,
    pub seq: u64,
    pub not_before_ms: u64,
    /// Waiting for other tasks to succeed (`--after`): stepped over, like a
    /// task in backoff, so it never blocks the queue.
    pub blocked: bool,
}

/// Why a new task was refused: the node's queue is at its bound (the
/// supervisor checks `--max-queue` before it puts a new task in).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the queue is full ({0} tasks waiting); retry later or raise --max-queue")]
pub struct QueueFull(pub usize);

/// A decision of `dispatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Start the task on these cores (already taken in the allocator).
    Start(TaskId, Allocation),
    /// The task cannot be given cores on this host (its cores are held
    /// already, or do not exist): not for want of free cores or of size.
    Impossible(TaskId, AllocError),
}

type Key = (Reverse<i32>, u64);

/// Priority-then-FIFO queue. Unbounded: an accepted task is never dropped,
/// so the bound on new tasks is the caller's check (see `QueueFull`).
#[derive(Debug, Clone, Default)]
pub struct TaskQueue {
    items: BTreeMap<Key, QueuedTask>,
    index: BTreeMap<TaskId, Key>,
}

impl TaskQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains(&self, id: &TaskId) -> bool {
        self.index.contains_key(id)
    }

    /// Puts a task in, or back in (restart, retry, runtime unavailable),
    /// replacing any entry of the same id. Never refused.
    pub fn put(&mut self, task: QueuedTask) {
        self.remove(&task.id);
        let key = (Reverse(task.priority), task.seq);
        self.index.insert(task.id.clone(), key);
        self.items.insert(key, task);
    }

    pub fn remove(&mut self, id: &TaskId) -> Option<QueuedTask> {
        let key = self.index.remove(id)?;
        self.items.remove(&key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &QueuedTask> {
        self.items.values()
    }

    /// Earliest time a waiting task comes out of backoff, if any waits.
    pub fn next_wakeup(&self, now: u64) -> Option<u64> {
        self.items
            .values()
            .map(|t| t.not_before_ms)
            .filter(|&t| t > now)
            .min()
    }

    /// Starts what fits now, in order, taking cores from `alloc`. Stops at the
    /// first ready task that does not fit for want of free cores; steps over
    /// one larger than this host (see the module documentation).
    pub fn dispatch(&mut self, alloc: &mut CoreAllocator, now: u64) -> Vec<Dispatch> {
        let mut out = Vec::new();
        let ready: Vec<QueuedTask> = self
            .items
            .values()
            .filter(|t| t.not_before_ms <= now && !t.blocked)
            .cloned()
            .collect();
        for task in ready {
            match alloc.allocate(&task.id, task.cores) {
                Ok(allocation) => {
                    self.remove(&task.id);
                    out.push(Dispatch::Start(task.id, allocation));
                }
                Err(AllocError::Busy { .. }) => break,
                Err(AllocError::NeverFits { .. }) => {}
                Err(e) => {
                    self.remove(&task.id);
                    out.push(Dispatch::Impossible(task.id, e));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    fn qt(n: u32, cores: u32, priority: i32, seq: u64) -> QueuedTask {
        QueuedTask {
            id: TaskId::new(format!("t{n}")).unwrap(),
            cores: CoreCount::new(cores).unwrap(),
            priority,
            seq,
            not_before_ms: 0,
            blocked: false,
        }
    }

    fn started(d: &[Dispatch]) -> Vec<String> {
        d.iter()
            .filter_map(|d| match d {
                Dispatch::Start(id, _) => Some(id.to_string()),
                Dispatch::Impossible(..) => None,
            })
            .collect()
    }

    #[test]
    fn putting_a_task_again_replaces_it() {
        let mut q = TaskQueue::new();
        q.put(qt(1, 1, 0, 1));
        q.put(qt(1, 1, 9, 2));
        assert_eq!(q.len(), 1);
        assert_eq!(q.iter().map(|t| t.priority).collect::<Vec<_>>(), vec![9]);
    }

    #[test]
    fn priority_then_fifo_and_no_overtaking() {
        let mut a = CoreAllocator::new(Topology::uniform(1, 4, 1));
        let mut q = TaskQueue::new();
        q.put(qt(1, 2, 0, 1));
        q.put(qt(2, 3, 0, 2));
        q.put(qt(3, 1, 0, 3));
        q.put(qt(4, 1, 5, 4));
        let d = q.dispatch(&mut a, 0);
        // t4 (priority 5) then t1; t2 needs 3 of the 1 left and blocks t3.
        assert_eq!(started(&d), vec!["t4", "t1"]);
        assert_eq!(q.len(), 2);
        a.release(&TaskId::new("t1").unwrap());
        a.release(&TaskId::new("t4").unwrap());
        assert_eq!(started(&q.dispatch(&mut a, 0)), vec!["t2", "t3"]);
    }

    #[test]
    fn backoff_steps_aside() {
        let mut a = CoreAllocator::new(Topology::uniform(1, 1, 1));
        let mut q = TaskQueue::new();
        let mut waiting = qt(1, 1, 0, 1);
        waiting.not_before_ms = 50;
        q.put(waiting);
        q.put(qt(2, 1, 0, 2));
        assert_eq!(started(&q.dispatch(&mut a, 10)), vec!["t2"]);
        assert_eq!(q.next_wakeup(10), Some(50));
    }

    #[test]
    fn a_task_larger_than_the_host_waits_and_blocks_nobody() {
        // Accepted while the mesh's larger nodes were busy: it waits for
        // the mover, and the tasks behind it start here.
        let mut a = CoreAllocator::new(Topology::uniform(1, 2, 1));
        let mut q = TaskQueue::new();
        q.put(qt(1, 4, 0, 1));
        q.put(qt(2, 1, 0, 2));
        q.put(qt(3, 1, 0, 3));
        assert_eq!(started(&q.dispatch(&mut a, 0)), vec!["t2", "t3"]);
        assert_eq!(q.len(), 1);
        assert!(q.contains(&TaskId::new("t1").unwrap()));
        assert!(q.dispatch(&mut a, 0).is_empty());
    }

    #[test]
    fn a_task_whose_cores_are_held_already_leaves_the_queue() {
        let mut a = CoreAllocator::new(Topology::uniform(1, 2, 1));
        a.allocate(&TaskId::new("t1").unwrap(), CoreCount::new(1).unwrap())
            .unwrap();
        let mut q = TaskQueue::new();
        q.put(qt(1, 1, 0, 1));
        let d = q.dispatch(&mut a, 0);
        assert!(matches!(d[0], Dispatch::Impossible(..)));
        assert!(q.is_empty());
    }
}
