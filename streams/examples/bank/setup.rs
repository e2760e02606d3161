//! `bank setup`: the driver creates the input and output topics before any processor starts
//! (BANK.md "Topics"): P partitions, replication factor min(3, brokers), `cleanup.policy=delete`.
//! Idempotent: topics that exist with P partitions are kept; another count is an error.

use clap::Args;
use kafka_client::admin::{Admin, NewTopic};
use kafka_client::config::ClientConfig;
use kafka_client::kafka_wire::ErrorCode;

use crate::BoxError;

/// `bank setup` flags.
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// Bootstrap servers (`HOST:PORT[,HOST:PORT...]`).
    #[arg(long)]
    pub bootstrap: String,
    /// The input topic.
    #[arg(long)]
    pub input: String,
    /// The output topic.
    #[arg(long)]
    pub output: String,
    /// Partitions of both topics.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
}

/// Creates (or finds) both topics; prints one line per topic.
pub async fn setup(args: &SetupArgs) -> Result<(), BoxError> {
    if args.partitions < 1 {
        return Err(format!("--partitions must be at least 1, not {}", args.partitions).into());
    }
    if args.input == args.output {
        return Err(format!("input and output are both {:?}", args.input).into());
    }
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(crate::servers(&args.bootstrap));
    let admin = Admin::new(cfg).await?;
    let result = async {
        let brokers = admin.describe_cluster().await?.brokers.len();
        let rf = brokers.clamp(1, 3) as i16;
        for topic in [&args.input, &args.output] {
            ensure_topic(&admin, topic, args.partitions, rf).await?;
        }
        Ok(())
    }
    .await;
    admin.client().close();
    result
}

async fn ensure_topic(admin: &Admin, name: &str, partitions: i32, rf: i16) -> Result<(), BoxError> {
    let topic = NewTopic::new(name, partitions, rf).config("cleanup.policy", "delete");
    match admin.create_topic(&topic).await {
        Ok(created) => {
            println!(
                "created topic {name}: {} partitions, replication factor {}",
                created.partitions, created.replication_factor
            );
            Ok(())
        }
        Err(e) if e.broker_code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {
            let found = admin
                .describe_topics(&[name])
                .await?
                .pop()
                .map_or(0, |t| t.partitions.len());
            if found != partitions as usize {
                return Err(format!(
                    "topic {name} exists with {found} partitions, but --partitions is \
                     {partitions}: delete it or pass --partitions {found}"
                )
                .into());
            }
            println!("topic {name} exists: {found} partitions (kept)");
            Ok(())
        }
        Err(e) => Err(format!("cannot create topic {name}: {e}").into()),
    }
}
