//! Threads copied from another store (`panaversity study import`, the Python Study Mode's
//! `study_mode_chat` schema). Ids are kept, so links to old threads keep working; a thread or item
//! already here (same owner and id) is left as it is, which makes a second import a no-op.

use platform::db::Db;

use super::{Owner, StoreError, ThreadStore, db_err, insert_item_sql, insert_thread_sql};
use crate::chatkit::{ThreadItem, ThreadMetadata};

/// What [`ThreadStore::import_thread`] added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// The thread was new here.
    pub thread: bool,
    /// Items that were new here.
    pub items: u64,
}

impl ThreadStore {
    /// Insert `meta` and `items` for `owner` unless they exist (by id), in one transaction.
    pub async fn import_thread(
        &self,
        owner: &Owner,
        meta: &ThreadMetadata,
        items: &[ThreadItem],
    ) -> Result<Imported, StoreError> {
        import(self.db(), owner, meta, items).await
    }
}

async fn import(
    db: &Db,
    owner: &Owner,
    meta: &ThreadMetadata,
    items: &[ThreadItem],
) -> Result<Imported, StoreError> {
    let mut tx = db
        .begin_write()
        .await
        .map_err(db_err("starting a thread import"))?;
    let thread = insert_thread_sql(owner, meta, " ON CONFLICT (user_id, id) DO NOTHING")?
        .execute(&mut *tx)
        .await
        .map_err(db_err("importing a thread"))?
        .rows_affected()
        > 0;
    let mut added = 0;
    for item in items {
        added += insert_item_sql(owner, item, " ON CONFLICT (user_id, id) DO NOTHING")?
            .execute(&mut *tx)
            .await
            .map_err(db_err("importing an item"))?
            .rows_affected();
    }
    tx.commit()
        .await
        .map_err(db_err("committing a thread import"))?;
    Ok(Imported {
        thread,
        items: added,
    })
}
