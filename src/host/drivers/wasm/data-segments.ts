// Where a module's active data segments write into memory 0 at instantiation, read from
// its binary. A restore must zero what they wrote (the state knows those bytes), and
// touching every page of a fresh memory to find them costs a page fault per 4 KiB page
// (~0.1 ms each here), far more than the restore itself.

export interface ByteRange {
  start: number;
  end: number;
}

const DATA_SECTION = 11;

/** The byte ranges active data segments initialise, or undefined when an offset is not a constant (scan instead). */
export function activeDataRanges(bytes: Uint8Array): ByteRange[] | undefined {
  let pos = 8; // magic + version
  const u32 = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[pos++]!;
      result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result >>> 0;
      shift += 7;
    }
  };
  const i32 = (): number => {
    let result = 0;
    let shift = 0;
    let b: number;
    do {
      b = bytes[pos++]!;
      result |= (b & 0x7f) << shift;
      shift += 7;
    } while (b & 0x80);
    if (shift < 32 && b & 0x40) result |= ~0 << shift;
    return result >>> 0; // offsets are unsigned addresses
  };
  while (pos < bytes.length) {
    const id = bytes[pos++]!;
    const size = u32();
    const end = pos + size;
    if (id !== DATA_SECTION) {
      pos = end;
      continue;
    }
    const out: ByteRange[] = [];
    const count = u32();
    for (let i = 0; i < count; i++) {
      const flags = u32();
      if (flags === 1) {
        pos += 0; // passive: written only by memory.init, which the state covers
        const len = u32();
        pos += len;
        continue;
      }
      if (flags === 2 && u32() !== 0) return undefined; // another memory
      if (flags !== 0 && flags !== 2) return undefined;
      if (bytes[pos++] !== 0x41) return undefined; // not i32.const
      const offset = i32();
      if (bytes[pos++] !== 0x0b) return undefined;
      const len = u32();
      out.push({ start: offset, end: offset + len });
      pos += len;
    }
    return out;
  }
  return [];
}
