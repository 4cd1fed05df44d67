//! The campaign scenario of issue 12 on a running `colloquy serve`, never
//! restarted (the steps are in campaign_steps).

mod campaign_steps;
mod server;

use campaign_steps::{variant, write, Shop};
use server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lottery_campaign_ships_as_yaml_canaries_promotes_and_rolls_back() {
    let base = tempfile::tempdir().unwrap();
    write(base.path(), &variant("2.0.0", false));
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_with(data.path(), &[], &["--bot", base.path().to_str().unwrap()]);
    let shop = Shop {
        c: reqwest::Client::builder().http1_only().build().unwrap(),
        base: s.url(""),
    };
    campaign_steps::run(&shop, 1).await;
}
