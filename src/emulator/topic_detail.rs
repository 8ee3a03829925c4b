//! The topic-level families a real Pulsar 4.0.7 broker publishes for a topic with one producer
//! and one subscription, besides the five rate and backlog series every emulated topic has:
//! what makes a real broker page weigh what it does (95 series per topic). Listed from
//! `tests/fixtures/real/broker.prom`; `tests/page_shape/` checks the list against it both ways.

/// Extra labels of one series of a family, besides `cluster`, `namespace` and `topic`.
pub type Extra = &'static [(&'static str, &'static str)];

/// Every such family (all declared `gauge`, the `_total` ones too), with the extra labels of
/// each of its series per topic.
pub const FAMILIES: &[(&str, &[Extra])] = &[
    ("pulsar_average_msg_size", &[&[]]),
    ("pulsar_consumers_count", &[&[]]),
    ("pulsar_delayed_message_index_size_bytes", &[&[]]),
    ("pulsar_entry_size_count", &[&[]]),
    ("pulsar_entry_size_le_100_kb", &[&[]]),
    ("pulsar_entry_size_le_128", &[&[]]),
    ("pulsar_entry_size_le_16_kb", &[&[]]),
    ("pulsar_entry_size_le_1_kb", &[&[]]),
    ("pulsar_entry_size_le_1_mb", &[&[]]),
    ("pulsar_entry_size_le_2_kb", &[&[]]),
    ("pulsar_entry_size_le_4_kb", &[&[]]),
    ("pulsar_entry_size_le_512", &[&[]]),
    ("pulsar_entry_size_le_overflow", &[&[]]),
    ("pulsar_entry_size_sum", &[&[]]),
    ("pulsar_in_bytes_total", &[&[]]),
    ("pulsar_in_messages_total", &[&[]]),
    ("pulsar_msg_backlog", &[&[]]),
    ("pulsar_out_bytes_total", &[&[("subscription", "sub")]]),
    ("pulsar_out_messages_total", &[&[("subscription", "sub")]]),
    ("pulsar_producers_count", &[&[]]),
    ("pulsar_publish_rate_limit_times", &[&[]]),
    ("pulsar_storage_backlog_age_seconds", &[&[]]),
    (
        "pulsar_storage_backlog_quota_exceeded_evictions_total",
        &[&[("quota_type", "size")], &[("quota_type", "time")]],
    ),
    ("pulsar_storage_backlog_quota_limit", &[&[]]),
    ("pulsar_storage_backlog_quota_limit_time", &[&[]]),
    ("pulsar_storage_ledger_write_latency_count", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_0_5", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_1", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_10", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_100", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_1000", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_20", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_200", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_5", &[&[]]),
    ("pulsar_storage_ledger_write_latency_le_50", &[&[]]),
    ("pulsar_storage_ledger_write_latency_overflow", &[&[]]),
    ("pulsar_storage_ledger_write_latency_sum", &[&[]]),
    ("pulsar_storage_logical_size", &[&[]]),
    ("pulsar_storage_offloaded_size", &[&[]]),
    ("pulsar_storage_read_cache_misses_rate", &[&[]]),
    ("pulsar_storage_read_rate", &[&[]]),
    ("pulsar_storage_size", &[&[]]),
    ("pulsar_storage_write_latency_count", &[&[]]),
    ("pulsar_storage_write_latency_le_0_5", &[&[]]),
    ("pulsar_storage_write_latency_le_1", &[&[]]),
    ("pulsar_storage_write_latency_le_10", &[&[]]),
    ("pulsar_storage_write_latency_le_100", &[&[]]),
    ("pulsar_storage_write_latency_le_1000", &[&[]]),
    ("pulsar_storage_write_latency_le_20", &[&[]]),
    ("pulsar_storage_write_latency_le_200", &[&[]]),
    ("pulsar_storage_write_latency_le_5", &[&[]]),
    ("pulsar_storage_write_latency_le_50", &[&[]]),
    ("pulsar_storage_write_latency_overflow", &[&[]]),
    ("pulsar_storage_write_latency_sum", &[&[]]),
    ("pulsar_storage_write_rate", &[&[]]),
    (
        "pulsar_subscription_back_log",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_back_log_no_delayed",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_blocked_on_unacked_messages",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_consumers_count",
        &[&[("subscription", "sub")]],
    ),
    ("pulsar_subscription_delayed", &[&[("subscription", "sub")]]),
    (
        "pulsar_subscription_delayed_message_index_size_bytes",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_dispatch_throttled_bytes_events",
        &[
            &[("subscription", "sub"), ("reason", "subscription")],
            &[("subscription", "sub"), ("reason", "topic")],
            &[("subscription", "sub"), ("reason", "broker")],
        ],
    ),
    (
        "pulsar_subscription_dispatch_throttled_msg_events",
        &[
            &[("subscription", "sub"), ("reason", "subscription")],
            &[("subscription", "sub"), ("reason", "topic")],
            &[("subscription", "sub"), ("reason", "broker")],
        ],
    ),
    (
        "pulsar_subscription_filter_accepted_msg_count",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_filter_processed_msg_count",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_filter_rejected_msg_count",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_filter_rescheduled_msg_count",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_in_replay",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_last_acked_timestamp",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_last_consumed_flow_timestamp",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_last_consumed_timestamp",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_last_expire_timestamp",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_last_mark_delete_advanced_timestamp",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_msg_ack_rate",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_msg_drop_rate",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_msg_rate_expired",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_msg_rate_out",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_msg_rate_redeliver",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_msg_throughput_out",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_total_msg_expired",
        &[&[("subscription", "sub")]],
    ),
    (
        "pulsar_subscription_unacked_messages",
        &[&[("subscription", "sub")]],
    ),
    ("pulsar_subscriptions_count", &[&[]]),
    ("pulsar_txn_tb_aborted_total", &[&[]]),
    ("pulsar_txn_tb_active_total", &[&[]]),
    ("pulsar_txn_tb_committed_total", &[&[]]),
];
