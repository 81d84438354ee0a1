//! `config.json`, the one file that configures a device: its typed model
//! (every key the OS reads, with balenaOS's defaults and quirks), validation
//! in stages (raw JSON → validated values, errors naming the key path, the
//! value and what is expected), the write protocol that survives a power cut
//! at any instant on FAT, and the files each key renders to.
//!
//! Pure library: no daemons, no system calls beyond file I/O under paths the
//! caller gives. The device agent and the CLI live in the `baleen` crate.

pub mod model;
pub mod render;
pub mod store;
