// Types for wsbeat-client.mjs.

export type WsbeatState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface WsbeatClientOptions {
  /** Client id, sent as `?client_id=` (with JWT auth it may be left out: the token's `sub` is the id). */
  id?: string;
  /**
   * Returns a JWT (or a promise of one), sent as `?token=`. Called before the
   * first connection, after a close 4401, when the token it has is due for
   * refresh, and some time before its `exp` (then sent as the text message
   * `token JWT` on the open connection). Returning null or '' stops the
   * client (close 4401 `no token`); throwing or rejecting is retried with backoff.
   */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** How often `heartbeat` is sent, in ms. Default 25000 (inside the server's default 60 s timeout). */
  heartbeatInterval?: number;
  /**
   * No frame from the server for this long (ms) means the connection is
   * dead: it is dropped and a new one made. 0 (default) turns this off. Use
   * only with `--server-heartbeat text|both`, set well above the server's
   * `--heartbeat-interval` (twice or more).
   */
  silenceTimeout?: number;
  /** Reconnect backoff, ms: attempt n waits uniformly in [0, min(maxReconnectDelay, minReconnectDelay * 2^n)]. Default 500. */
  minReconnectDelay?: number;
  /** Cap of the backoff, ms. Default 30000. */
  maxReconnectDelay?: number;
}

export interface WsbeatCloseEvent {
  /** The close code; 1006 for a connection lost or given up without a close frame. */
  code: number;
  /** The close reason; `silence timeout`, `connect timeout`, `no token` or `getToken failed: …` when decided here. */
  reason: string;
  /** False after 1008, 4001, 4003, 4403, 4401 without getToken, or close(). */
  willReconnect: boolean;
}

export interface WsbeatEvents {
  open: () => void;
  /** A text (string) or binary (ArrayBuffer) message; the server's text heartbeats are not passed on. */
  message: (data: string | ArrayBuffer) => void;
  close: (event: WsbeatCloseEvent) => void;
  state: (state: WsbeatState) => void;
}

export class WsbeatClient {
  constructor(url: string, options?: WsbeatClientOptions);
  /** `connecting` until the first attempt succeeds or fails, then `open` or `reconnecting`; `closed` for good. */
  readonly state: WsbeatState;
  /** Subscribes; returns a function that unsubscribes. */
  on<E extends keyof WsbeatEvents>(event: E, fn: WsbeatEvents[E]): () => void;
  /** Sends a message; false (nothing sent, nothing queued) unless open. */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): boolean;
  /** Closes for good (code 1000); no reconnect. */
  close(): void;
}

/** The `exp` claim of a JWT in milliseconds, or null. */
export function jwtExpiryMs(token: string): number | null;

/** Uniform in [0, min(max, min * 2^attempt)]: full jitter, applied after the cap. */
export function backoffDelay(attempt: number, min: number, max: number, random?: () => number): number;

export default WsbeatClient;
