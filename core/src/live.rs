//! [`Live`]: a value every shard reads and a configuration reload replaces.
//!
//! Readers take the current generation as an `Arc` and keep it as long as they like: a
//! session admitted before a reload runs to its end on the sites, rules and settings it
//! started with, while connections admitted afterwards get the new ones. Nothing here
//! waits on I/O; the lock is held only to clone or swap one pointer.

use std::sync::{Arc, RwLock};

/// The current generation of a shared, replaceable value.
#[derive(Debug, Default)]
pub struct Live<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Live<T> {
    pub fn new(value: Arc<T>) -> Live<T> {
        Live {
            current: RwLock::new(value),
        }
    }

    /// The current generation.
    pub fn load(&self) -> Arc<T> {
        // A poisoned lock still holds a whole `Arc` (replacing it is one store).
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `value` the current generation for every later [`Live::load`]; returns the
    /// previous one (its holders keep it alive as long as they need it).
    pub fn replace(&self, value: Arc<T>) -> Arc<T> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *current, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_their_generation_and_new_readers_get_the_new_one() {
        let live = Live::new(Arc::new(1));
        let before = live.load();
        let old = live.replace(Arc::new(2));
        assert_eq!((*before, *old, *live.load()), (1, 1, 2));
        assert!(Arc::ptr_eq(&before, &old));
    }
}
