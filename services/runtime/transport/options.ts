import type { ChannelOptions } from '@grpc/grpc-js';

/** Largest message a link accepts: a batch of many envelopes, well above any single request. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/**
 * Largest reply a role sends the controller: a guest's Start reply carries every operation of its
 * run (the timeline the queueing model needs), about 100 bytes each.
 */
export const MAX_CONTROL_REPLY_BYTES = 1024 * 1024 * 1024;

/**
 * Options for every channel between vmmsim processes: a connection of its own per client (so two
 * links never share one HTTP/2 session and its flow control), no proxy lookups on internal hops,
 * and keepalive so an idle link stays warm between phases of a run.
 */
export const CHANNEL_OPTIONS: ChannelOptions = {
  'grpc.use_local_subchannel_pool': 1,
  'grpc.enable_http_proxy': 0,
  // Lenient: a process starved of CPU (many roles on two cores) must not lose its links; a peer
  // that died is noticed by the launcher and the per-call deadlines, not by keepalive.
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 20_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
};

/** The controller's control channels: what it receives can be a whole run's timeline. */
export const CONTROL_CHANNEL_OPTIONS: ChannelOptions = {
  ...CHANNEL_OPTIONS,
  'grpc.max_receive_message_length': MAX_CONTROL_REPLY_BYTES,
};

/**
 * A connection with no call open for this long is closed by the server (a client reconnects on its
 * next call, and a call that meets the close is retried). Links keep a stream open and never idle;
 * this drops peers that connect and never say anything, which would otherwise hold a socket forever.
 */
export const MAX_CONNECTION_IDLE_MS = 20_000;

/** Link streams a role process serves at once (a run opens a handful; a peer cannot open thousands). */
export const MAX_LINK_STREAMS = 256;
/** Streams on one HTTP/2 connection: each link has its own connection and one stream. */
export const MAX_STREAMS_PER_CONNECTION = 32;
/** A link stream must send its first message within this long of opening, or it is ended. */
export const LINK_HELLO_MS = 10_000;
/** Requests of one stream received but not yet answered before the server stops reading it. */
export const MAX_IN_FLIGHT_PER_STREAM = 8192;

/** What a role accepts stays bounded; what it sends may be a Start reply with a long timeline. */
export const SERVER_OPTIONS: ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_CONTROL_REPLY_BYTES,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.max_connection_idle_ms': MAX_CONNECTION_IDLE_MS,
  'grpc.max_concurrent_streams': MAX_STREAMS_PER_CONNECTION,
};

