//! `bank run`: the processor (BANK.md "Processor contract"), on the streams crate's EventSource.

use std::time::Duration;

use clap::Args;
use streams::kafka_client::config::ClientConfig;
use streams::kafka_client::{ConsumerRecord, ProducerRecord};
use streams::store::{BigEndian, MemStore, Utf8};
use streams::{DecodeError, EventContext, EventSource, EventSourceConfig, Guarantee, Outcome};

use crate::wire::{self, BalanceUpdate, EventType, InputEvent, Status};

/// `bank run` flags, exactly as BANK.md's "processor's command line".
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Bootstrap servers (`HOST:PORT[,HOST:PORT...]`).
    #[arg(long)]
    pub bootstrap: String,
    /// The input topic.
    #[arg(long)]
    pub input: String,
    /// The output topic.
    #[arg(long)]
    pub output: String,
    /// The consumer group.
    #[arg(long)]
    pub group: String,
    /// The changelog topic (default `{group}-{input}-changelog`).
    #[arg(long)]
    pub changelog: Option<String>,
    /// A stable instance id (also the static `group.instance.id`).
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Transactional producers in the pool (default: the library's, 3).
    #[arg(long)]
    pub pool_size: Option<usize>,
    /// How long a transaction stays open for more events (ms).
    #[arg(long, default_value_t = 10)]
    pub linger_ms: u64,
    /// At-least-once instead of exactly once (no transactions).
    #[arg(long)]
    pub at_least_once: bool,
    /// Close a transaction at once when no older one is committing (instead of lingering).
    #[arg(long)]
    pub eager_when_idle: bool,
}

type Store = MemStore<String, i64, Utf8, BigEndian>;

fn decode(r: &ConsumerRecord) -> Result<InputEvent, DecodeError> {
    InputEvent::decode(r.value.as_deref().unwrap_or_default())
        .map_err(|e| DecodeError::new(e.to_string()))
}

/// The processor contract of BANK.md for one event type.
fn handler(
    kind: EventType,
    output: String,
) -> impl Fn(&mut EventContext<'_, Store>, InputEvent) -> Outcome + Send + Sync + 'static {
    move |ctx, ev| {
        let Some(key) = ctx.record().key.clone() else {
            return Outcome::Fail("an input event without a key".into());
        };
        let account = match std::str::from_utf8(&key) {
            Ok(a) => a.to_string(),
            Err(e) => return Outcome::Fail(format!("a key that is not UTF-8: {e}").into()),
        };
        let balance = ctx.get(&account).copied().unwrap_or(0);
        let (after, status) = wire::apply(balance, kind, ev.amount);
        if matches!(status, Status::Applied) {
            ctx.put(account, after);
        }
        let update = BalanceUpdate {
            seq: ev.seq,
            intended_us: ev.intended_us,
            amount: ev.amount,
            balance: after,
            kind,
            status,
        };
        ctx.forward(
            ProducerRecord::new(output.as_str())
                .key(key)
                .value(update.encode().to_vec()),
        );
        Outcome::Complete
    }
}

/// Runs one processor instance until SIGINT/SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = ClientConfig::default();
    client.bootstrap_servers(
        args.bootstrap
            .split(',')
            .map(str::to_string)
            .collect::<Vec<_>>(),
    );
    let mut cfg = EventSourceConfig::new(args.group.clone(), args.input.clone(), client);
    cfg.changelog_topic = args.changelog.clone();
    cfg.instance_id = args.instance_id.clone();
    cfg.static_membership = args.instance_id.is_some();
    if let Some(n) = args.pool_size {
        cfg.eos.pool_size = n;
    }
    cfg.eos.eager_when_idle = args.eager_when_idle;
    cfg.eos.linger = Duration::from_millis(args.linger_ms);
    cfg.guarantee = if args.at_least_once {
        Guarantee::AtLeastOnce
    } else {
        Guarantee::ExactlyOnce
    };
    let source = EventSource::builder(cfg.clone(), |_| MemStore::new(Utf8, BigEndian))
        .on(
            std::str::from_utf8(EventType::Deposit.header_value()).unwrap_or("deposit"),
            decode,
            handler(EventType::Deposit, args.output.clone()),
        )
        .on(
            std::str::from_utf8(EventType::Withdraw.header_value()).unwrap_or("withdraw"),
            decode,
            handler(EventType::Withdraw, args.output.clone()),
        )
        .build()
        .await?;
    eprintln!(
        "bank run: input={} output={} group={} changelog={} instance={} guarantee={:?} \
         pool_size={} linger_ms={} eager_when_idle={} target_txn_events={} session_ms={} heartbeat_ms={} \
         static_membership={}",
        args.input,
        args.output,
        args.group,
        source.changelog_topic(),
        source.instance_id(),
        cfg.guarantee,
        cfg.eos.pool_size,
        args.linger_ms,
        cfg.eos.eager_when_idle,
        cfg.eos.target_txn_events,
        cfg.session_timeout.as_millis(),
        cfg.heartbeat_interval.as_millis(),
        cfg.static_membership,
    );
    let mut active = source.active_partitions();
    let reporter = tokio::spawn(async move {
        let mut last = usize::MAX;
        loop {
            let n = active.borrow_and_update().len();
            if n != last {
                eprintln!("active={n}");
                last = n;
            }
            if active.changed().await.is_err() {
                return;
            }
        }
    });
    let result = source.run_until_signal().await;
    reporter.abort();
    let stats = source.stats();
    eprintln!(
        "bank run: stopped: events={} transactions={} committed_events={} restored_records={} \
         skipped_unknown={} undecodable={}",
        stats.events,
        stats.transactions,
        stats.committed_events,
        stats.restored_records,
        stats.skipped_unknown,
        stats.undecodable
    );
    result.map_err(Into::into)
}
