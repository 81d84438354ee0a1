//! A storage handle that fatfs and this crate can both hold, so the storage
//! can still be reached after fatfs has unmounted (fatfs 0.3 never gives it
//! back).

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

/// A cloneable handle to one storage; clones share the position too.
#[derive(Debug)]
pub struct Shared<S>(Rc<RefCell<S>>);

impl<S> Shared<S> {
    pub(crate) fn new(storage: S) -> Self {
        Shared(Rc::new(RefCell::new(storage)))
    }
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(Rc::clone(&self.0))
    }
}

impl<S: Read> Read for Shared<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl<S: Write> Write for Shared<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

impl<S: Seek> Seek for Shared<S> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.borrow_mut().seek(pos)
    }
}
