//! The cheap handle through which pulls and container starts reach image
//! GC's ledger (owned by the GC task, `gc`): fire and forget, so a start
//! never waits on the ledger's disk.

use tokio::sync::mpsc;

/// What happened to an image on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// This agent pulled it; `was_present`: the host had it before.
    Pulled { name: String, was_present: bool },
    /// A container of ours started from it.
    Used(String),
}

/// See the module doc. Clones share one channel.
#[derive(Debug, Clone)]
pub struct ImageNotes {
    tx: Option<mpsc::UnboundedSender<Note>>,
}

/// The GC task's end of the channel.
pub type NoteInbox = mpsc::UnboundedReceiver<Note>;

impl ImageNotes {
    /// A handle and the inbox the GC task reads.
    pub fn channel() -> (Self, NoteInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx: Some(tx) }, rx)
    }

    /// A handle that notes nothing (tests of other parts).
    pub fn discard() -> Self {
        Self { tx: None }
    }

    pub fn pulled(&self, name: &str, was_present: bool) {
        self.send(Note::Pulled {
            name: name.to_owned(),
            was_present,
        });
    }

    pub fn used(&self, name: &str) {
        self.send(Note::Used(name.to_owned()));
    }

    fn send(&self, note: Note) {
        if let Some(tx) = &self.tx {
            // The GC task is gone only when the agent stops.
            let _ = tx.send(note);
        }
    }
}
