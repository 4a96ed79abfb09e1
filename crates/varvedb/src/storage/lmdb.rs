//! The one place where heed's errors become VarveDB's: every heed call ends in `.lmdb()`.
//!
//! There is deliberately no `From<heed::Error> for Error`: a public `From` impl would make heed
//! part of VarveDB's API, and tie our semver to heed's.

use crate::error::{Error, Result};

/// Converts heed's results into VarveDB's.
pub(crate) trait LmdbResultExt<T> {
    /// The result, with a heed error wrapped as [`Error::Lmdb`].
    fn lmdb(self) -> Result<T>;
}

impl<T> LmdbResultExt<T> for heed::Result<T> {
    #[inline]
    fn lmdb(self) -> Result<T> {
        self.map_err(Error::lmdb)
    }
}
