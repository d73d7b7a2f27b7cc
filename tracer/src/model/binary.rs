//! The executables and libraries of a trace, by file: the ELF facts the
//! recorder read while they ran (`Event::Binary`).

use super::FastMap;

use crate::trace::{ElfFacts, Event, event::Bytes};

/// What the recorder found at one file.
#[derive(Debug, Clone)]
pub struct RecordedBinary {
    pub size_bytes: u64,
    pub facts: ElfFacts,
    pub error: Option<Bytes>,
}

/// (device, inode) -> what the recorder read there.
#[derive(Debug, Default)]
pub struct BinaryTable {
    files: FastMap<(u32, u64), RecordedBinary>,
}

impl BinaryTable {
    pub fn add(&mut self, event: &Event) {
        if let Event::Binary { dev, ino, size_bytes, facts, error, .. } = event {
            let binary =
                RecordedBinary { size_bytes: *size_bytes, facts: (**facts).clone(), error: error.clone() };
            self.files.insert((*dev, *ino), binary);
        }
    }

    pub fn get(&self, dev: u32, ino: u64) -> Option<&RecordedBinary> {
        self.files.get(&(dev, ino))
    }
}
