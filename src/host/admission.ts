// The host's reservation book. Pure and synchronous: `reserve` checks and commits with
// no await in between, so any number of concurrent deployments can never over-commit.

export interface Capacity {
  memoryMb: number;
  cpuMillis: number;
  instances: number;
}

export interface ReservationRequest {
  memoryMb: number;
  cpuMillis: number;
}

export interface Reservation {
  readonly id: string;
  readonly memoryMb: number;
  readonly cpuMillis: number;
}

export type ReserveResult = { ok: true; reservation: Reservation } | { ok: false; reason: string };

export interface Admission {
  readonly capacity: Capacity;
  /** Reserve room for one instance, or say why not. */
  reserve(id: string, request: ReservationRequest): ReserveResult;
  /** Record what a re-adopted instance holds, even past capacity (it is already running). */
  adopt(id: string, request: ReservationRequest): Reservation;
  /** Idempotent. */
  release(reservation: Reservation): void;
  reserved(): Capacity;
  free(): Capacity;
}

export function createAdmission(capacity: Capacity): Admission {
  for (const [k, v] of Object.entries(capacity)) {
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`capacity.${k} must be a non-negative number, got ${v}`);
  }
  const book = new Map<string, Reservation>();
  let memoryMb = 0;
  let cpuMillis = 0;

  const commit = (id: string, request: ReservationRequest): Reservation => {
    const reservation: Reservation = Object.freeze({ id, memoryMb: request.memoryMb, cpuMillis: request.cpuMillis });
    book.set(id, reservation);
    memoryMb += request.memoryMb;
    cpuMillis += request.cpuMillis;
    return reservation;
  };

  const reserved = (): Capacity => ({ memoryMb, cpuMillis, instances: book.size });

  return {
    capacity: { ...capacity },
    reserve(id, request) {
      if (book.has(id)) return { ok: false, reason: `instance ${id} already holds a reservation` };
      if (book.size + 1 > capacity.instances) {
        return { ok: false, reason: `instance limit reached (${book.size} of ${capacity.instances} in use)` };
      }
      if (memoryMb + request.memoryMb > capacity.memoryMb) {
        return {
          ok: false,
          reason: `not enough memory: ${request.memoryMb} MB asked, ${capacity.memoryMb - memoryMb} MB free of ${capacity.memoryMb} MB`,
        };
      }
      if (cpuMillis + request.cpuMillis > capacity.cpuMillis) {
        return {
          ok: false,
          reason: `not enough CPU: ${request.cpuMillis} millicores asked, ${capacity.cpuMillis - cpuMillis} free of ${capacity.cpuMillis}`,
        };
      }
      return { ok: true, reservation: commit(id, request) };
    },
    adopt(id, request) {
      const existing = book.get(id);
      if (existing) return existing;
      return commit(id, request);
    },
    release(reservation) {
      // Only the very object handed out releases: a stale copy cannot free a newer booking.
      if (book.get(reservation.id) !== reservation) return;
      book.delete(reservation.id);
      memoryMb -= reservation.memoryMb;
      cpuMillis -= reservation.cpuMillis;
    },
    reserved,
    free() {
      return {
        memoryMb: capacity.memoryMb - memoryMb,
        cpuMillis: capacity.cpuMillis - cpuMillis,
        instances: capacity.instances - book.size,
      };
    },
  };
}
