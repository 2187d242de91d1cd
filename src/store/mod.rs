//! Store backends behind [`sluice_actors::store::Store`].

pub mod embedded;
pub mod redis;
