//! One stream's connection, shared between the endpoint (which moves its frames) and the
//! application's handle (which moves its bytes), with the handle's wakers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use crate::Connection;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) reader: Option<Waker>,
    pub(crate) writer: Option<Waker>,
    pub(crate) closer: Option<Waker>,
    /// The application dropped its handle: reads are discarded from now on.
    pub(crate) dropped: bool,
}

impl Shared {
    pub(crate) fn new(conn: Connection) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            conn,
            reader: None,
            writer: None,
            closer: None,
            dropped: false,
        }))
    }

    /// Wakes whatever of the application waits on this stream: what it waits for may have
    /// happened.
    pub(crate) fn wake(&mut self) {
        for waker in
            [self.reader.take(), self.writer.take(), self.closer.take()].into_iter().flatten()
        {
            waker.wake();
        }
    }
}

pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves a connection whose state is still consistent
    // (every method leaves it so); carry on with it.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
