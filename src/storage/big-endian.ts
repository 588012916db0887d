// Big-endian numbers in byte arrays, read and written without a DataView:
// in Node.js 20 constructing a DataView is a call into the runtime (about
// 300 ns, ten times the reads it serves), and the write path built several
// per put (the proposal, the row and its key, on every member). Callers
// check bounds first: these do not.

const scratch = new Float64Array(1);
const scratchBytes = new Uint8Array(scratch.buffer);
const littleEndianHost = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

export function readFloat64(bytes: Uint8Array, offset: number): number {
  if (littleEndianHost) {
    for (let i = 0; i < 8; i++) scratchBytes[7 - i] = bytes[offset + i] as number;
  } else {
    for (let i = 0; i < 8; i++) scratchBytes[i] = bytes[offset + i] as number;
  }
  return scratch[0] as number;
}

export function writeFloat64(bytes: Uint8Array, offset: number, value: number): void {
  scratch[0] = value;
  if (littleEndianHost) {
    for (let i = 0; i < 8; i++) bytes[offset + i] = scratchBytes[7 - i] as number;
  } else {
    for (let i = 0; i < 8; i++) bytes[offset + i] = scratchBytes[i] as number;
  }
}

export function readUint32(bytes: Uint8Array, offset: number): number {
  return (((bytes[offset] as number) << 24) | ((bytes[offset + 1] as number) << 16) | ((bytes[offset + 2] as number) << 8) | (bytes[offset + 3] as number)) >>> 0;
}

export function writeUint32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value >>> 24;
  bytes[offset + 1] = (value >>> 16) & 0xff;
  bytes[offset + 2] = (value >>> 8) & 0xff;
  bytes[offset + 3] = value & 0xff;
}
