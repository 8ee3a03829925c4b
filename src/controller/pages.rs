//! Lists read from the API server in pages (`limit` + `continue`), with a bound on the whole,
//! so a namespace with many pods never arrives as one unbounded answer.

use std::fmt::Debug;

use kube::Api;
use kube::api::ListParams;
use serde::de::DeserializeOwned;

/// Objects asked for per request.
pub const PAGE: u32 = 500;

/// The most objects one listing may hold; a StatefulSet's pods are far fewer.
pub const MAX_ITEMS: usize = 10_000;

/// Why a paged listing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// A page request failed (an expired `continue` token answers 410).
    #[error("listing page {page}: {source}")]
    Api {
        /// 1-based number of the page that failed.
        page: usize,
        /// The API server's error.
        #[source]
        source: kube::Error,
    },
    /// More objects than the bound; the selector matches far more than it should.
    #[error("more than {max} objects match; narrow the selector")]
    TooMany {
        /// The bound.
        max: usize,
    },
}

/// Every object `params` matches, `page` at a time, refused past `max` objects.
pub async fn list_all<K>(
    api: &Api<K>,
    params: &ListParams,
    page: u32,
    max: usize,
) -> Result<Vec<K>, PagesError>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut items = Vec::new();
    let mut params = params.clone().limit(page.max(1));
    for n in 1.. {
        let list = api
            .list(&params)
            .await
            .map_err(|source| PagesError::Api { page: n, source })?;
        items.extend(list.items);
        if items.len() > max {
            return Err(PagesError::TooMany { max });
        }
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(items)
}
