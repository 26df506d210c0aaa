/**
 * Which last wills are published ([MQTT-6] in protocol/SPEC.md).
 *
 * In a reconnect storm the broker finishes CONNECTs late and out of order. A connection attempt its
 * client had given up on (its connect timeout) could be authenticated tens of seconds after the
 * client's next attempt had connected and published its `online` status; aedes then found its socket
 * closed and published its will, overwriting the newer status — the site shown offline while
 * connected (282–744 of 10,000 simulated sites after a broker restart). Broker-side arrival order does
 * not tell which attempt is the client's latest (an abandoned attempt's CONNECT was seen to arrive 17 s
 * after the live one's), but two facts do identify a will that would speak falsely:
 *
 * - the connection was never acknowledged (no CONNACK sent): the client never had this connection,
 *   so the broker has nothing to report on its behalf;
 * - another connection of the same client id is registered and connected: the client speaks for
 *   itself on it.
 *
 * A takeover (a new CONNECT replacing a connected one) still publishes the replaced connection's will,
 * before the new connection's CONNACK (aedes closes the old one first), as MQTT 3.1.1 requires.
 *
 * Wills stored by an earlier run of the broker (it crashed or was killed with those connections open)
 * are published when the broker starts, before it accepts connections: `publishStoredWills`.
 */
import type { Aedes, Client, PublishPacket } from 'aedes';
import type { Logger } from 'pino';

interface WillState {
  readonly id: string;
  readonly will?: unknown;
  readonly connackSent?: boolean;
  readonly connected?: boolean;
}

/**
 * True when `packet` is `client`'s own will (aedes passes the connection's will object while it
 * closes) and publishing it would misreport the client: see the module comment. `current`: the
 * connection aedes has registered for that client id, if any.
 */
export function isStaleWill(client: Client | null, packet: unknown, current: Client | undefined): boolean {
  if (!client) return false;
  const c = client as unknown as WillState;
  if (packet !== c.will) return false; // an ordinary publish
  if (c.connackSent !== true) return true;
  const other = current as unknown as WillState | undefined;
  return other !== undefined && current !== client && other.connected === true;
}

/** Stored wills published at once at start-up (their writes are group-committed together). */
const WILL_BATCH = 512;

interface StoredWill {
  readonly topic: string;
  readonly clientId?: string;
  readonly brokerId?: string;
}

/**
 * Publishes, then deletes, every will in the store: at start-up they all belong to connections an
 * earlier run of the broker lost without a DISCONNECT (it crashed, or was killed), and MQTT says their
 * wills are due. aedes would publish them only at its first will sweep (4 x heartbeatIntervalMs after
 * start), and never when the broker keeps its id across restarts (the stored broker id is then "alive").
 * Each goes through authorizePublish as aedes' sweep does (client null: only a site's own status or a
 * controller topic passes); a refused one is deleted, not retried; one whose publish fails is kept
 * and logged, and the broker starts regardless. Returns the counts.
 */
export async function publishStoredWills(
  aedes: Aedes,
  log: Logger,
): Promise<{ published: number; refused: number; failed: number }> {
  const { persistence } = aedes as unknown as {
    persistence: {
      streamWill(brokers: Record<string, unknown>): AsyncIterable<StoredWill>;
      delWill(client: { id: string; brokerId?: string }): Promise<unknown>;
    };
  };
  let published = 0;
  let refused = 0;
  let failed = 0;
  const one = async (will: StoredWill): Promise<void> => {
    const packet = will as unknown as PublishPacket;
    try {
      const ok = await new Promise<boolean>((resolve) =>
        aedes.authorizePublish(null, packet, (err) => resolve(!err)),
      );
      if (ok) {
        await new Promise<void>((resolve, reject) =>
          aedes.publish(packet, (err) => (err ? reject(err) : resolve())),
        );
        published++;
      } else {
        refused++;
      }
      await persistence.delWill({
        id: will.clientId ?? '',
        ...(will.brokerId !== undefined && { brokerId: will.brokerId }),
      });
    } catch (err) {
      // Kept: aedes' own will sweep tries it again later. The broker starts regardless.
      failed++;
      log.warn({ err, clientId: will.clientId, topic: will.topic }, 'stored will not published');
    }
  };
  // In batches, so that their writes share commits: a broker killed with 10,000 sites connected
  // finds 10,000 wills, and one at a time would hold its listeners closed for one commit each.
  let batch: StoredWill[] = [];
  for await (const will of persistence.streamWill({})) {
    batch.push(will);
    if (batch.length === WILL_BATCH) {
      await Promise.all(batch.map(one));
      batch = [];
    }
  }
  await Promise.all(batch.map(one));
  if (published + refused + failed > 0) {
    log.info({ published, refused, failed }, 'wills of connections the previous run lost were published');
  }
  return { published, refused, failed };
}
