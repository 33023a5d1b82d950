//! Who may call the API and what they changed: `api_tokens` (token id →
//! the token's record, its SHA-256 only) and `audit` (entry id, big-endian,
//! so the tree is in the order entries were written → the entry).

use super::codec::{decode, page_json, scan_json, to_json};
use super::{Store, StoreError};
use crate::records::{ApiToken, AuditEntry};

impl Store {
    /// Keeps a token created through the API. Fsyncs.
    pub fn put_api_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        self.api_tokens
            .insert(token.id.as_bytes(), to_json(token))?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets a token; the one removed, if it existed. Fsyncs.
    pub fn remove_api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        let Some(value) = self.api_tokens.remove(id.as_bytes())? else {
            return Ok(None);
        };
        self.db.flush()?;
        decode(id.as_bytes(), &value).map(Some)
    }

    /// Every token created through the API, in id order.
    pub fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        scan_json(&self.api_tokens, b"")
    }

    /// Numbers `entries` (increasing across restarts) and appends them in
    /// one batch, then fsyncs.
    pub fn append_audit(&self, entries: &mut [AuditEntry]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for entry in entries.iter_mut() {
            entry.id = self.db.generate_id()?;
            batch.insert(&entry.id.to_be_bytes(), to_json(entry));
        }
        self.audit.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// The entries after `after` (from the first when `None`), oldest
    /// first, at most `limit` (at least 1); and whether more follow.
    pub fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError> {
        let after = after.map(u64::to_be_bytes);
        let page = page_json(&self.audit, &[], after.as_ref().map(|id| &id[..]), limit)?;
        Ok((page.items, page.next.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use crate::records::{ApiToken, AuditEntry, Role};
    use crate::store::{Aged, Store};

    fn entry(at: u64, route: &str) -> AuditEntry {
        AuditEntry {
            id: 0,
            at,
            token: "t1".into(),
            name: "desk".into(),
            role: Role::Staff,
            method: "POST".into(),
            route: route.into(),
            object: None,
            status: 200,
        }
    }

    #[test]
    fn tokens_are_kept_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let token = ApiToken {
            id: "00aa".into(),
            name: "kiosk".into(),
            role: Role::Frontend,
            sha256: "ab".repeat(32),
            created_at: 5,
        };
        store.put_api_token(&token).unwrap();
        assert_eq!(store.api_tokens().unwrap(), std::slice::from_ref(&token));
        assert_eq!(store.remove_api_token("00aa").unwrap(), Some(token));
        assert_eq!(store.remove_api_token("00aa").unwrap(), None);
        assert!(store.api_tokens().unwrap().is_empty());
    }

    #[test]
    fn the_audit_pages_in_write_order_and_prunes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut first: Vec<_> = (0..3).map(|i| entry(100 + i, "/a")).collect();
        store.append_audit(&mut first).unwrap();
        let mut second = vec![entry(200, "/b"), entry(201, "/b")];
        store.append_audit(&mut second).unwrap();
        let ids: Vec<u64> = first.iter().chain(&second).map(|e| e.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

        let (page, more) = store.audit_page(None, 2).unwrap();
        assert_eq!((page.len(), more), (2, true));
        let (page, more) = store.audit_page(Some(page[1].id), 2).unwrap();
        assert_eq!((page[0].at, page[1].at, more), (102, 200, true));
        let (page, more) = store.audit_page(Some(page[1].id), 2).unwrap();
        assert_eq!((page.len(), more), (1, false));
        assert_eq!(page[0], second[1]);

        let prune = |max| store.prune(Aged::Audit, 200, max, None).unwrap().removed;
        assert_eq!(prune(2), 2, "at most max");
        assert_eq!(prune(100), 1);
        assert_eq!(prune(100), 0);
        let (left, _) = store.audit_page(None, 10).unwrap();
        assert_eq!(left, second);
    }
}
