//! The PostgreSQL backend against a real server: `COLLOQUY_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432`). Each test works in scratch databases of its
//! own and drops them at the end.
#![cfg(feature = "postgres")]

mod sql_common;

use sql_common::{Kind, Server};

async fn server() -> Server {
    Server::from_env(
        Kind::Postgres,
        "COLLOQUY_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    sql_common::conforms(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shards_spread_over_two_databases() {
    sql_common::shards_spread_over_two_databases(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrating_twice_changes_nothing() {
    sql_common::migrating_twice_changes_nothing(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_version_1_database_is_upgraded() {
    sql_common::a_version_1_database_is_upgraded(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unmigrated_and_newer_schemas_are_refused() {
    sql_common::unmigrated_and_newer_schemas_are_refused(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_processes_one_log() {
    sql_common::two_processes_one_log(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_server_is_transient_and_comes_back() {
    sql_common::lost_server_is_transient_and_comes_back(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_awkward_user_ids_stay_apart() {
    sql_common::awkward_user_ids_stay_apart(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_one_bad_append_spares_its_group() {
    sql_common::one_bad_append_spares_its_group(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_opens_from_the_store_config() {
    sql_common::opens_from_the_store_config(&server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_registry_conforms() {
    sql_common::registry_conforms(&server().await).await;
}
