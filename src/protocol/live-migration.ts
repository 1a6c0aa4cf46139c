// Live migration between hosts (issue 14), as the hosts' control APIs carry it: the target
// answers an offer (POST /v1/incoming), the provider hands it to the source (POST
// /v1/instances/:id/migrate), which sends its running instance there.
import { Type, type Static } from '@sinclair/typebox';

/** Where and how a source sends its running instance: made by the target, for one move. */
export const MigrationOffer = Type.Object(
  {
    address: Type.String({ pattern: '^[A-Za-z0-9.:\\[\\]-]{1,200}:[0-9]{1,5}$', description: "host:port of the target's one-connection listener" }),
    key: Type.String({ pattern: '^[0-9a-f]{64}$', description: 'pre-shared TLS key (hex), fresh per move; it authenticates and encrypts the stream' }),
    annotations: Type.Record(Type.String({ maxLength: 200 }), Type.String({ maxLength: 1000 }), { description: "the target's facts, which the source's must equal (root disk digest, kernel, memory…)" }),
  },
  { additionalProperties: false },
);
export type MigrationOffer = Static<typeof MigrationOffer>;

/** The target's answer to POST /v1/incoming: its instance (starting) and the offer. */
export interface IncomingOffer {
  instance: string;
  offer: MigrationOffer;
}

/** The source's answer to POST /v1/instances/:id/migrate, once the target has everything. */
export interface LiveMigrationResult {
  id: string;
  /** Start to end of the migration. */
  totalMs: number;
  /** The instance ran nowhere this long (as the driver reports it). */
  downtimeMs: number;
  /** New messages were held at least this long (they wait until the source is removed, then go to the target). */
  heldMs: number;
  /** Bytes of state sent, as the source's driver counts them (vm: RAM and devices, not the disk). */
  bytes: number;
}
