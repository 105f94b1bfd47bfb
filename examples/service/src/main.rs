//! `oncetask-example-service [STORE_URL [NAMESPACE]]`: runs the example
//! service's tasks on the store the URL names (default `memory`), under
//! `NAMESPACE` (default `oncetask_example`), and prints how each ended.

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "memory".into());
    let namespace = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "oncetask_example".into());
    let store = oncetask_example_service::connect(&url, &namespace).await?;
    let summary = oncetask_example_service::run(store, "example", Duration::from_secs(30)).await?;
    for (id, status) in summary {
        println!("{id:40} {status}");
    }
    Ok(())
}
