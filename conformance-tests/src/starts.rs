//! `Store::take_starts` and `Store::return_starts`: rate limiter windows
//! every process draws from (the rule is `StartsRequest::grant`).

use chrono::TimeDelta;
use oncetask_core::Store;
use oncetask_core::store::StartsRequest;

use crate::StoreFactory;
use crate::support::*;

/// A request for `count` starts of `kind`'s limiter (`key`: a key's own)
/// in the 1 s window holding `base_time() + ms`.
fn starts(kind: &str, key: Option<&str>, ms: i64, limit: u32, count: u32) -> StartsRequest {
    let now = base_time() + TimeDelta::milliseconds(ms);
    StartsRequest::new(ENV, kind, key.map(str::to_owned), now, 1_000, limit, count)
}

async fn take<S: Store>(store: &S, request: &StartsRequest) -> u32 {
    let granted = store
        .take_starts(std::slice::from_ref(request))
        .await
        .expect("take_starts");
    assert_eq!(granted.len(), 1, "one answer per request");
    granted[0]
}

async fn give_back<S: Store>(store: &S, request: &StartsRequest) {
    store
        .return_starts(std::slice::from_ref(request))
        .await
        .expect("return_starts");
}

/// Grants stop at the limit; starts given back can be taken again; the
/// next window starts afresh; a request for a window that has passed for
/// the limiter gets nothing and gives nothing back.
pub async fn starts_are_granted_up_to_the_limit_of_each_window(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    assert_eq!(take(&store, &starts(KIND, None, 100, 10, 7)).await, 7);
    assert_eq!(
        take(&store, &starts(KIND, None, 900, 10, 7)).await,
        3,
        "what is left"
    );
    assert_eq!(
        take(&store, &starts(KIND, None, 999, 10, 1)).await,
        0,
        "spent"
    );
    give_back(&store, &starts(KIND, None, 500, 10, 4)).await;
    assert_eq!(
        take(&store, &starts(KIND, None, 600, 10, 7)).await,
        4,
        "given back"
    );
    assert_eq!(
        take(&store, &starts(KIND, None, 1_000, 10, 7)).await,
        7,
        "next window"
    );
    assert_eq!(
        take(&store, &starts(KIND, None, 999, 10, 1)).await,
        0,
        "a lagging clock adds nothing to a past window"
    );
    give_back(&store, &starts(KIND, None, 999, 10, 7)).await;
    assert_eq!(
        take(&store, &starts(KIND, None, 1_500, 10, 10)).await,
        3,
        "nor gives back to it"
    );
}

/// A batch answers each request in order; limiters are separate per kind,
/// per resource key and per env.
pub async fn limiters_are_separate_per_env_kind_and_key(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let batch = [
        starts(KIND, None, 0, 2, 5),
        starts(KIND, Some("acct-1"), 0, 3, 5),
        starts(KIND, Some("acct-2"), 0, 1, 5),
        starts(OTHER_KIND, None, 0, 4, 5),
    ];
    let granted = store.take_starts(&batch).await.expect("take_starts");
    assert_eq!(granted, [2, 3, 1, 4]);
    let mut other_env = starts(KIND, None, 0, 2, 5);
    other_env.env = OTHER_ENV.to_owned();
    assert_eq!(take(&store, &other_env).await, 2, "per env");
    let odd = starts(KIND, Some("a:b/{c}*"), 0, 1, 1);
    assert_eq!(take(&store, &odd).await, 1);
    assert_eq!(
        take(&store, &odd).await,
        0,
        "odd keys are keys like any other"
    );
}

/// Concurrent takers never get more than the limit between them.
pub async fn concurrent_takers_never_exceed_the_limit(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let takers = (0..16).map(|_| {
        let store = store.clone();
        async move {
            let mut got = 0;
            for _ in 0..4 {
                got += take(&store, &starts(KIND, None, 10, 100, 3)).await;
            }
            got
        }
    });
    let total: u32 = futures::future::join_all(takers).await.into_iter().sum();
    assert_eq!(total, 100, "16 takers asking for 192 starts of 100");
}
