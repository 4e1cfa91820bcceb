/**
 * HTTP connection timeouts that `Deno.serve` lacks (nor does Deno's `node:http`, whose
 * `headersTimeout` and `keepAliveTimeout` are accepted and ignored): a header trickle or an idle
 * connection would stay open for ever. The guard owns the public listener and relays each
 * connection's bytes to the real server on a loopback port, unparsed. It needs no HTTP parser:
 * the server's handler tells it when a request has arrived (its headers are complete) and when
 * its response has ended, matched to the connection by the relay socket's local port. So each
 * connection is in one of three phases:
 *
 * - idle (just opened, or every response sent): closed after `idleMillis` without a byte;
 * - headers (bytes came, no request yet): a 408 and closed after `headerMillis`;
 * - active (a request is being answered): no timer here; the body's own timeout is the app's;
 * - closing (a response said `connection: close`, e.g. a 408 for a body trickle): closed once the
 *   response has had `CLOSE_GRACE_MILLIS` to reach the client, whatever the client still sends.
 */

/** Timeouts of the guard, in milliseconds. */
export interface ConnectionTimeouts {
  /** From a request's first byte to its complete headers. */
  readonly headerMillis: number;
  /** Between requests on a kept-alive connection, and before the first one. */
  readonly idleMillis: number;
}

/** The public side of a guarded server. */
export interface ConnectionGuard {
  /** The port it listens on (the actual one when 0 was asked for). */
  readonly port: number;
  /**
   * Runs the handler of a request that came over the relay socket from `relayPort` (the real
   * server's `info.remoteAddr.port`), marking its connection active until the response ends.
   */
  track(relayPort: number, respond: () => Promise<Response>): Promise<Response>;
  /** Stops accepting at once; connections still open are closed by `closeAll`. */
  stopAccepting(): void;
  /**
   * Closes every connection still open, after at most `graceMillis` for each to relay what the
   * real server already sent it (a stream's last events and its `[DONE]`).
   */
  closeAll(graceMillis: number): Promise<void>;
}

const REQUEST_TIMEOUT = new TextEncoder().encode(
  "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
);

/** After a `connection: close` response has ended, the time its last bytes get to be relayed. */
const CLOSE_GRACE_MILLIS = 500;

const writeAll = async (conn: Deno.Conn, bytes: Uint8Array) => {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
};

class GuardedConnection {
  private phase: "idle" | "headers" | "active" | "closing" = "idle";
  private active = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private readonly whenClosed = Promise.withResolvers<void>();
  /** Resolves once the connection is closed. */
  readonly done: Promise<void> = this.whenClosed.promise;

  constructor(
    private readonly client: Deno.Conn,
    private readonly relay: Deno.Conn,
    private readonly timeouts: ConnectionTimeouts,
    private readonly onClose: () => void,
  ) {
    this.enter("idle");
    void this.pump(client, relay, () => {
      if (this.phase === "idle") this.enter("headers");
    });
    void this.pump(relay, client, () => {});
  }

  requestStarted() {
    this.active++;
    this.enter("active");
  }

  /** `closeAfter`: the response said `connection: close`, so no request follows it. */
  responseEnded(closeAfter = false) {
    this.active--;
    if (this.closed) return;
    if (closeAfter) this.enter("closing");
    else if (this.active === 0 && this.phase !== "closing") this.enter("idle");
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    for (const conn of [this.client, this.relay]) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
    this.onClose();
    this.whenClosed.resolve();
  }

  private enter(phase: "idle" | "headers" | "active" | "closing") {
    this.phase = phase;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (phase === "idle") {
      this.timer = setTimeout(() => this.close(), this.timeouts.idleMillis);
    } else if (phase === "closing") {
      this.timer = setTimeout(() => this.close(), CLOSE_GRACE_MILLIS);
    } else if (phase === "headers") {
      this.timer = setTimeout(() => {
        // No request is being answered in this phase, so nothing else writes to the client.
        writeAll(this.client, REQUEST_TIMEOUT).catch(() => {}).finally(() => this.close());
      }, this.timeouts.headerMillis);
    }
  }

  /** Relays bytes one way until either side ends, then closes both. */
  private async pump(from: Deno.Conn, to: Deno.Conn, onBytes: () => void) {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (!this.closed) {
        const n = await from.read(buffer);
        if (n === null) break;
        onBytes();
        await writeAll(to, buffer.subarray(0, n));
      }
    } catch { /* a reset or a close from the other pump: the connection is over */ }
    this.close();
  }
}

/** A response whose end (or cancellation by a departed client) is reported once. */
const onResponseEnd = (response: Response, ended: () => void): Response => {
  if (response.body === null) {
    ended();
    return response;
  }
  const reader = response.body.getReader();
  let reported = false;
  const report = () => {
    if (!reported) {
      reported = true;
      ended();
    }
  };
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { value, done } = await reader.read();
        if (done) {
          report();
          controller.close();
        } else controller.enqueue(value);
      } catch (error) {
        report();
        controller.error(error);
      }
    },
    cancel(reason) {
      report();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return new Response(body, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
};

/** Listens on `hostname:port` and relays every connection to `127.0.0.1:relayTo`. */
export const startConnectionGuard = (
  listen: { readonly hostname: string; readonly port: number },
  relayTo: number,
  timeouts: ConnectionTimeouts,
): ConnectionGuard => {
  const listener = Deno.listen({ hostname: listen.hostname, port: listen.port, transport: "tcp" });
  const byRelayPort = new Map<number, GuardedConnection>();
  const relayFor = async (client: Deno.Conn) => {
    try {
      const relay = await Deno.connect({ hostname: "127.0.0.1", port: relayTo });
      const relayPort = relay.localAddr.port;
      byRelayPort.set(
        relayPort,
        new GuardedConnection(client, relay, timeouts, () => byRelayPort.delete(relayPort)),
      );
    } catch {
      client.close(); // the real server is gone: shutting down
    }
  };
  void (async () => {
    try {
      for await (const client of listener) void relayFor(client);
    } catch { /* the listener was closed */ }
  })();
  return {
    port: listener.addr.port,
    async track(relayPort, respond) {
      const connection = byRelayPort.get(relayPort);
      connection?.requestStarted();
      let response: Response;
      try {
        response = await respond();
      } catch (error) {
        connection?.responseEnded();
        throw error;
      }
      const closeAfter = response.headers.get("connection")?.toLowerCase() === "close";
      return connection === undefined
        ? response
        : onResponseEnd(response, () => connection.responseEnded(closeAfter));
    },
    stopAccepting() {
      try {
        listener.close();
      } catch { /* already closed */ }
    },
    async closeAll(graceMillis) {
      // The real server has shut down, so it closes its side of each relay: a connection then
      // ends by itself once its pump has written the last bytes to the client.
      const open = [...byRelayPort.values()];
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(open.map((connection) => connection.done)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMillis))),
      ]);
      clearTimeout(timer);
      for (const connection of open) connection.close();
    },
  };
};
