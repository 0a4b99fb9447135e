/**
 * The ids of revoked sessions with when each was revoked, kept compact: an open-addressing hash
 * table over typed arrays, 12 bytes a slot outside the V8 heap (at most half the slots used, so
 * about 24 bytes per entry), instead of a Map of 36-character strings (well over 100 bytes per
 * entry, all on the heap the image caps at 128 MB). One million relevant revocations take about
 * 24 MB here.
 *
 * A session id is reduced to 64 bits (its two halves folded together; a v4 UUID has 122 random
 * bits): two different ids share a key with probability about n / 2^64 per lookup, so a live
 * session being taken for a revoked one is not a practical concern. Ids that are not UUIDs
 * (Latchkey issues only UUIDs) are hashed the same way from their text.
 */
export class RevokedSessionSet {
  #hi: Uint32Array;
  #lo: Uint32Array;
  /** Seconds since the epoch the session was revoked; 0 marks an empty slot. */
  #at: Uint32Array;
  #size = 0;

  constructor(capacity = 1024) {
    const slots = powerOfTwoAtLeast(capacity);
    this.#hi = new Uint32Array(slots);
    this.#lo = new Uint32Array(slots);
    this.#at = new Uint32Array(slots);
  }

  get size(): number {
    return this.#size;
  }

  /** Bytes held by the table (outside the JS heap). */
  get bytes(): number {
    return this.#hi.byteLength + this.#lo.byteLength + this.#at.byteLength;
  }

  has(sessionId: string): boolean {
    const [hi, lo] = keyOf(sessionId);
    return this.#find(hi, lo) >= 0;
  }

  /** Records the session as revoked at `atMs` (the later time wins when it is already there). */
  add(sessionId: string, atMs: number): void {
    const [hi, lo] = keyOf(sessionId);
    const at = Math.max(1, Math.floor(atMs / 1000));
    const found = this.#find(hi, lo);
    if (found >= 0) {
      if (at > this.#at[found]!) this.#at[found] = at;
      return;
    }
    if ((this.#size + 1) * 2 > this.#at.length) this.#grow();
    this.#insert(hi, lo, at);
    this.#size += 1;
  }

  #find(hi: number, lo: number): number {
    const mask = this.#at.length - 1;
    for (let i = slotOf(hi, lo) & mask; ; i = (i + 1) & mask) {
      if (this.#at[i] === 0) return -1;
      if (this.#hi[i] === hi && this.#lo[i] === lo) return i;
    }
  }

  #insert(hi: number, lo: number, at: number): void {
    const mask = this.#at.length - 1;
    let i = slotOf(hi, lo) & mask;
    while (this.#at[i] !== 0) i = (i + 1) & mask;
    this.#hi[i] = hi;
    this.#lo[i] = lo;
    this.#at[i] = at;
  }

  /** Doubles the table, re-inserting every entry. */
  #grow(): void {
    const [hi, lo, at] = [this.#hi, this.#lo, this.#at];
    const slots = at.length * 2;
    this.#hi = new Uint32Array(slots);
    this.#lo = new Uint32Array(slots);
    this.#at = new Uint32Array(slots);
    for (let i = 0; i < at.length; i++) if (at[i] !== 0) this.#insert(hi[i]!, lo[i]!, at[i]!);
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** 64 bits of a session id, as two unsigned 32-bit halves. */
function keyOf(sessionId: string): [number, number] {
  if (UUID.test(sessionId)) {
    const hex = sessionId.replaceAll('-', '');
    const a = Number.parseInt(hex.slice(0, 8), 16);
    const b = Number.parseInt(hex.slice(8, 16), 16);
    const c = Number.parseInt(hex.slice(16, 24), 16);
    const d = Number.parseInt(hex.slice(24, 32), 16);
    return [(a ^ c) >>> 0, (b ^ d) >>> 0];
  }
  // FNV-1a, twice with different offsets: only for ids Latchkey never issues.
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < sessionId.length; i++) {
    const code = sessionId.charCodeAt(i);
    h1 = Math.imul(h1 ^ code, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ code, 0x85ebca6b) >>> 0;
  }
  return [h1, h2];
}

/** Mixes both halves into a slot index (the halves are already random for v4 UUIDs). */
function slotOf(hi: number, lo: number): number {
  return (Math.imul(lo ^ (hi >>> 7), 0x9e3779b1) >>> 0) ^ hi;
}

function powerOfTwoAtLeast(n: number): number {
  let slots = 1024;
  while (slots < n) slots *= 2;
  return slots;
}
