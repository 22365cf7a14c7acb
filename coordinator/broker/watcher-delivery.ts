import type { Client } from 'aedes';

/**
 * Deliveries to operator connections (the dashboard, otactl, `mosquitto_sub` watchers) cost the
 * broker a bounded amount of memory, and a watcher that stops reading is cut at once.
 *
 * Aedes writes a delivery into the subscriber's socket whatever it has buffered (a full buffer only
 * makes it wait for `drain` before calling the delivery done), and cuts a client that does not
 * drain only after its drainTimeout, 60 s. A watcher of `devices/+/reported` that stops reading (a
 * frozen browser tab, a laptop going to sleep, a dead link) so made the coordinator hold every
 * report of the fleet for it for a minute: tens of MB per second during a big wave.
 *
 * Here a delivery to an operator connection is handed to its socket and reported done at once (the
 * publisher never waits for a watcher), and when the socket holds more than `maxBufferedBytes` not
 * yet read, the watcher is too far behind to catch up: its connection is closed (counted and
 * logged). Everything it watches is retained or fetched again at reconnect, which the dashboard
 * and otactl do by themselves, so nothing is lost but the wait.
 *
 * Must run before the client subscribes: Aedes binds a subscription to `client.deliver0` or
 * `client.deliverQoS` when it is made (authenticate is early enough).
 */

type Deliver = (packet: unknown, cb: () => void) => void;

interface DeliveringClient {
  deliver0: Deliver;
  deliverQoS: Deliver;
  conn: { writableLength?: number; destroy(err?: Error): void };
}

export const DEFAULT_MAX_WATCHER_BUFFER_BYTES = 16 * 1024 * 1024;

export function detachWatcherDeliveries(
  client: Client,
  options: { maxBufferedBytes: number; onCut: (bufferedBytes: number) => void },
): void {
  const c = client as unknown as DeliveringClient;
  let cut = false;
  const detached =
    (deliver: Deliver): Deliver =>
    (packet, cb) => {
      const buffered = c.conn.writableLength ?? 0;
      if (cut || buffered > options.maxBufferedBytes) {
        if (!cut) {
          cut = true;
          options.onCut(buffered);
          c.conn.destroy(new Error(`watcher too slow: ${buffered} bytes not read`));
        }
        setImmediate(cb);
        return;
      }
      // The write still happens in order (Aedes defers each with setImmediate); only the
      // publisher no longer waits for it.
      deliver.call(client, packet, () => {});
      cb();
    };
  c.deliver0 = detached(c.deliver0);
  c.deliverQoS = detached(c.deliverQoS);
}
