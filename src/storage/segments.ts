// The file layer of the node's log (`DIR/wal/`): numbered segment files of
// checksummed frames, appended with one write and one fdatasync per frame.
// What a frame holds is the caller's business (wal-store.ts); this file knows
// only how frames are laid out, numbered, written, rotated, deleted and read
// back. See docs/storage.md, "The node's log".
//
// A segment is `<16 hex digits>.wal`: a header, then frames one after the
// other, then zeros. Segments are preallocated by writing zeros (measured:
// with a file extended by ftruncate, or by appending, every fdatasync also
// flushes the file's size and extent metadata, 1.5-3x slower per commit), on
// libuv's pool ahead of time under a temporary name, and renamed into place
// when the active segment is full. A frame never straddles two segments; a
// frame bigger than a whole segment gets a fresh segment of its own, which it
// extends.
//
// Frame: u32 payload length, u32 CRC-32 of the length bytes and the payload,
// then the payload, whose first 8 bytes are the frame number (u64, one more
// than the frame before it, across segments). All numbers little-endian. A
// zero length marks the end of the written part of a segment.
//
// Recovery reads every segment in order and checks every frame. In the last
// segment a torn tail (an incomplete frame, or bytes failing their CRC, with no
// valid frame after them) is cut and overwritten with zeros; anywhere else a
// bad frame is refused with a DataDirectoryError naming the file and the
// offset.
//
// Every file operation goes through a LogFs (log-fs.ts): node:fs itself, or
// the simulator's disk (sim/disk.ts), so this code runs unchanged on both.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { realLogFs, unlinkIfPresentSync, type LogFs, type SegmentIo } from './log-fs.js';
import { DataDirectoryError } from './store.js';
import { OrdoError } from '../ordo-error.js';

export type { SegmentIo } from './log-fs.js';

/** Default size a segment is preallocated to; the log moves to a new segment when a frame does not fit. */
export const SEGMENT_BYTES_DEFAULT = 64 * 1024 * 1024;
/** Smallest segment size accepted (tests use small segments to rotate often). */
export const SEGMENT_BYTES_MIN = 1024;
/** Largest segment size accepted. */
export const SEGMENT_BYTES_MAX = 1024 * 1024 * 1024;
/** Version of the segment and frame layout; another version is refused. */
export const SEGMENT_FORMAT_VERSION = 1;
/** Segment header: magic (8), u32 version, u64 segment number, u32 CRC of the 20 bytes before it. */
export const SEGMENT_HEADER_BYTES = 24;
/** Frame header: u32 payload length, u32 CRC. */
export const FRAME_HEADER_BYTES = 8;
/** The frame number that starts every payload. */
export const FRAME_NUMBER_BYTES = 8;
/** Largest frame payload (the length is a u32; a turn bigger than this is refused before anything is written). */
export const FRAME_PAYLOAD_BYTES_MAX = 1024 * 1024 * 1024;
/** Zeros written per call while preallocating a segment. */
const ZERO_CHUNK_BYTES = 1024 * 1024;
/** Bytes read per call while recovering (at most ZERO_CHUNK_BYTES: whole chunks are compared with zeros). */
const READ_WINDOW_BYTES = 1024 * 1024;
/** The next segment is preallocated once the active one is filled this far (not at once: its writes would slow the commits). */
const PREPARE_AT_FRACTION = 0.5;
/** While looking for valid frames after a damaged one, frame numbers further ahead than this are not believed. */
const FRAME_NUMBER_LOOKAHEAD_MAX = 0x1_0000_0000;

const SEGMENT_MAGIC = Buffer.from('ordo-wal', 'latin1');
const SEGMENT_NAME = /^([0-9a-f]{16})\.wal$/;
const TEMP_SUFFIX = '.tmp';
const TWO_POW_32 = 0x1_0000_0000;
const SAFE_HIGH_WORD_MAX = 0x1f_ffff;
const ZEROS = Buffer.alloc(ZERO_CHUNK_BYTES);

export function writeU64LE(buf: Buffer, n: number, at: number): void {
  buf.writeUInt32LE(n >>> 0, at);
  buf.writeUInt32LE(Math.floor(n / TWO_POW_32), at + 4);
}

/** A u64 that must be a safe integer; `undefined` otherwise (corrupt). */
export function readU64LE(buf: Buffer, at: number): number | undefined {
  const hi = buf.readUInt32LE(at + 4);
  if (hi > SAFE_HIGH_WORD_MAX) return undefined;
  return hi * TWO_POW_32 + buf.readUInt32LE(at);
}

export function segmentFileName(seq: number): string {
  return `${seq.toString(16).padStart(16, '0')}.wal`;
}

/** The bytes a frame with `payloadBytes` of payload (frame number included) takes in a segment. */
export function frameBytes(payloadBytes: number): number {
  return FRAME_HEADER_BYTES + payloadBytes;
}

/** Fills in the header of the frame in `buf[0, total)`: its length and CRC (the payload, frame number first, is in place). */
export function sealFrame(buf: Buffer, total: number): void {
  const payloadBytes = total - FRAME_HEADER_BYTES;
  assert.ok(payloadBytes >= FRAME_NUMBER_BYTES && payloadBytes <= FRAME_PAYLOAD_BYTES_MAX, `frame payload of ${payloadBytes} bytes`);
  buf.writeUInt32LE(payloadBytes, 0);
  buf.writeUInt32LE(crc32(buf.subarray(FRAME_HEADER_BYTES, total), crc32(buf.subarray(0, 4))), 4);
}

function segmentHeader(seq: number): Buffer {
  const h = Buffer.alloc(SEGMENT_HEADER_BYTES);
  SEGMENT_MAGIC.copy(h, 0);
  h.writeUInt32LE(SEGMENT_FORMAT_VERSION, 8);
  writeU64LE(h, seq, 12);
  h.writeUInt32LE(crc32(h.subarray(0, 20)), 20);
  return h;
}

/** One frame read back. `payload` starts with the frame number; it is a view valid only during the onFrame call. */
export interface RecoveredFrame {
  readonly seq: number;
  readonly file: string;
  readonly offset: number;
  readonly frameNumber: number;
  /** The first frame of its segment. */
  readonly first: boolean;
  readonly payload: Buffer;
}

/** Where an append failed: before anything of the frame was written, while writing it, or in its fdatasync. */
export type AppendStage = 'before' | 'write' | 'sync';

export class AppendError extends OrdoError {
  readonly code = 'ORDO_ERR_LOG_APPEND';
  constructor(
    readonly stage: AppendStage,
    override readonly cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

export interface SegmentLogOptions {
  readonly segmentBytes: number;
  /** fdatasync every frame (and fsync new files and the directory). */
  readonly fsync: boolean;
  /** Called for every valid frame, in order, while opening; throw a DataDirectoryError to refuse. */
  readonly onFrame: (frame: RecoveredFrame) => void;
  /** One line about a cut torn tail (default: stderr). */
  readonly log?: (line: string) => void;
  /** The file system (default: node:fs; the simulator passes its disk). */
  readonly fs?: LogFs;
}

interface Preparation {
  readonly seq: number;
  readonly path: string;
  readonly done: Promise<void>;
  settled: boolean;
  failed: boolean;
  /** Why it failed (an errno error: a full disk must stay recognisable as one). */
  error: unknown;
  /** No longer wanted: removed once settled. */
  abandoned: boolean;
}

/** The segments of one log directory: recovery, appends, rotation, deletion. */
export class SegmentLog {
  /** @internal The writes and fdatasyncs of the commit path (the file system's); tests replace it to inject failures. */
  io: SegmentIo;
  /** Segment numbers on disk, ascending (the last one is active). */
  private readonly segments: number[];
  private activeFd: number;
  /** Where the next frame goes in the active segment (as written). */
  private activeOffset: number;
  /** Where the next frame goes once every queued frame is written: segment and offset. */
  private plannedSeq: number;
  private plannedOffset: number;
  /** The number the next frame must carry. */
  private nextFrameNumber: number;
  private preparation: Preparation | null = null;
  /** Every preparation not settled yet (abandoned ones included), so that close() leaves no file being written. */
  private readonly unsettled = new Set<Promise<void>>();
  private closed = false;

  private constructor(
    private readonly fs: LogFs,
    readonly dir: string,
    private readonly segmentBytes: number,
    private readonly fsync: boolean,
    segments: number[],
    activeFd: number,
    activeOffset: number,
    nextFrameNumber: number,
  ) {
    this.io = fs;
    this.segments = segments;
    this.activeFd = activeFd;
    this.activeOffset = activeOffset;
    this.plannedSeq = segments[segments.length - 1] as number;
    this.plannedOffset = activeOffset;
    this.nextFrameNumber = nextFrameNumber;
  }

  /**
   * Reads every segment of `dir` (which must exist) in order, handing each
   * valid frame to `onFrame`, cuts a torn tail of the last segment, and opens
   * the last segment for appending (creating segment 1 in an empty directory).
   * Temporary files of an unfinished preallocation are removed.
   */
  static open(dir: string, options: SegmentLogOptions): SegmentLog {
    const { segmentBytes } = options;
    assert.ok(
      Number.isSafeInteger(segmentBytes) && segmentBytes >= SEGMENT_BYTES_MIN && segmentBytes <= SEGMENT_BYTES_MAX,
      `segmentBytes must be an integer in ${SEGMENT_BYTES_MIN}..${SEGMENT_BYTES_MAX}`,
    );
    const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    const fs = options.fs ?? realLogFs;
    const seqs: number[] = [];
    for (const name of fs.readdirSync(dir)) {
      const m = SEGMENT_NAME.exec(name);
      if (m !== null) {
        const seq = Number.parseInt(m[1] as string, 16);
        if (!Number.isSafeInteger(seq) || seq < 1) throw new DataDirectoryError(`${join(dir, name)}: segment number out of range; refusing to start`);
        seqs.push(seq);
      } else if (name.endsWith(TEMP_SUFFIX)) {
        fs.unlinkSync(join(dir, name));
      }
    }
    seqs.sort((a, b) => a - b);
    for (let i = 1; i < seqs.length; i++) {
      if (seqs[i] !== (seqs[i - 1] as number) + 1) {
        throw new DataDirectoryError(
          `${dir}: segment ${segmentFileName((seqs[i - 1] as number) + 1)} is missing (found ${segmentFileName(seqs[i - 1] as number)} and ${segmentFileName(seqs[i] as number)}); refusing to start`,
        );
      }
    }
    if (seqs.length === 0) {
      const path = join(dir, segmentFileName(1));
      prepareSync(fs, path + TEMP_SUFFIX, 1, segmentBytes, options.fsync);
      fs.renameSync(path + TEMP_SUFFIX, path);
      if (options.fsync) fs.syncDirSync(dir);
      const fd = fs.openSync(path, 'r+');
      return new SegmentLog(fs, dir, segmentBytes, options.fsync, [1], fd, SEGMENT_HEADER_BYTES, 1);
    }
    let nextFrameNumber: number | null = null;
    let end = SEGMENT_HEADER_BYTES;
    for (let i = 0; i < seqs.length; i++) {
      const seq = seqs[i] as number;
      const last = i === seqs.length - 1;
      const file = join(dir, segmentFileName(seq));
      const scan = scanSegment(fs, file, seq, nextFrameNumber, last, options.onFrame);
      nextFrameNumber = scan.nextFrameNumber;
      end = scan.end;
      if (scan.cut !== null) {
        const fd = fs.openSync(file, 'r+');
        try {
          // Zeros over the bytes the file already has (no new space needed: this works on a full disk), then up to
          // the segment size if it was shorter.
          zeroFill(fs, fd, end, Math.max(segmentBytes, scan.fileBytes));
          if (options.fsync) fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        log(`ordo: ${file}: cut a torn tail at byte ${end} (${scan.cut}); continuing from there`);
      }
    }
    const activeSeq = seqs[seqs.length - 1] as number;
    const fd = fs.openSync(join(dir, segmentFileName(activeSeq)), 'r+');
    const opened = new SegmentLog(fs, dir, segmentBytes, options.fsync, seqs, fd, end, nextFrameNumber ?? 1);
    opened.prepareIfDue();
    return opened;
  }

  /** The number the next frame appended must carry (the caller writes it at the start of the payload). */
  get frameNumber(): number {
    return this.nextFrameNumber;
  }

  /** Segment numbers on disk, ascending; the last is active. */
  segmentNumbers(): readonly number[] {
    return this.segments;
  }

  /** Whether a frame of `bytes` would not fit after the frames planned so far (it then needs a new segment). */
  wouldRotate(bytes: number): boolean {
    return this.plannedOffset > SEGMENT_HEADER_BYTES && this.plannedOffset + bytes > this.segmentBytes;
  }

  /**
   * Plans a frame of `bytes`, in a new segment if `rotate`; returns the
   * segment it goes into and takes its frame number. Frames are then appended
   * in the order they were planned.
   */
  plan(bytes: number, rotate: boolean): number {
    assert.ok(!this.closed, 'segment log is closed');
    if (rotate) {
      this.plannedSeq++;
      this.plannedOffset = SEGMENT_HEADER_BYTES;
    }
    this.plannedOffset += bytes;
    this.nextFrameNumber++;
    this.prepareIfDue();
    return this.plannedSeq;
  }

  /** Appends a planned frame (`buf[0, length)`) with one write and one fdatasync, on this thread. Throws AppendError. */
  appendSync(buf: Buffer, length: number, rotate: boolean): void {
    if (rotate) {
      try {
        this.rotateSync();
      } catch (e) {
        throw new AppendError('before', e);
      }
    }
    let done = 0;
    try {
      while (done < length) done += this.io.writeSync(this.activeFd, buf, done, length - done, this.activeOffset + done);
    } catch (e) {
      throw new AppendError('write', e);
    }
    if (this.fsync) {
      try {
        this.io.fdatasyncSync(this.activeFd);
      } catch (e) {
        throw new AppendError('sync', e);
      }
    }
    this.activeOffset += length;
  }

  /** Appends a planned frame with one write and one fdatasync on libuv's pool. Rejects with AppendError. */
  async append(buf: Buffer, length: number, rotate: boolean): Promise<void> {
    if (rotate) {
      try {
        await this.rotate();
      } catch (e) {
        throw new AppendError('before', e);
      }
    }
    let done = 0;
    try {
      while (done < length) done += await this.io.write(this.activeFd, buf, done, length - done, this.activeOffset + done);
    } catch (e) {
      throw new AppendError('write', e);
    }
    if (this.fsync) {
      try {
        await this.io.fdatasync(this.activeFd);
      } catch (e) {
        throw new AppendError('sync', e);
      }
    }
    this.activeOffset += length;
  }

  private rotateSync(): void {
    const seq = (this.segments[this.segments.length - 1] as number) + 1;
    const path = join(this.dir, segmentFileName(seq));
    const prep = this.preparation;
    if (prep !== null && prep.seq === seq && prep.settled && !prep.failed) {
      this.fs.renameSync(prep.path, path);
    } else {
      // Not ready yet: a file of our own, prepared here (the background one is dropped when it settles).
      if (prep !== null) this.abandon(prep);
      const tmp = `${path}.sync${TEMP_SUFFIX}`;
      try {
        prepareSync(this.fs, tmp, seq, this.segmentBytes, this.fsync);
      } catch (e) {
        // A disk that filled up gets back the space of the half-written file.
        unlinkIfPresentSync(this.fs, tmp);
        throw e;
      }
      this.fs.renameSync(tmp, path);
    }
    this.preparation = null;
    if (this.fsync) this.fs.syncDirSync(this.dir);
    this.switchTo(seq, this.fs.openSync(path, 'r+'));
  }

  private async rotate(): Promise<void> {
    const seq = (this.segments[this.segments.length - 1] as number) + 1;
    const path = join(this.dir, segmentFileName(seq));
    let prep = this.preparation ?? this.startPreparation(seq);
    assert.equal(prep.seq, seq, 'the segment being prepared is the next one');
    await prep.done;
    if (prep.failed) {
      // One more try, here, so that the error is the one of this turn.
      prep = this.startPreparation(seq);
      await prep.done;
      if (prep.failed) {
        // Keep the errno code: a full disk (ENOSPC) is retried by the store, other failures are not.
        const code = (prep.error as NodeJS.ErrnoException | null)?.code;
        const why = prep.error instanceof Error ? prep.error.message : String(prep.error);
        throw Object.assign(new Error(`cannot preallocate ${path}: ${why}`), code === undefined ? {} : { code });
      }
    }
    await this.fs.rename(prep.path, path);
    this.preparation = null;
    if (this.fsync) await this.fs.syncDir(this.dir);
    this.switchTo(seq, this.fs.openSync(path, 'r+'));
  }

  private switchTo(seq: number, fd: number): void {
    this.fs.closeSync(this.activeFd);
    this.activeFd = fd;
    this.activeOffset = SEGMENT_HEADER_BYTES;
    this.segments.push(seq);
    this.prepareIfDue();
  }

  /**
   * Starts preallocating the segment after the active one, on libuv's pool,
   * once the frames planned fill the active one far enough (or go past it).
   */
  private prepareIfDue(): void {
    if (this.closed || this.preparation !== null) return;
    const active = this.segments[this.segments.length - 1] as number;
    if (this.plannedSeq === active && this.plannedOffset < this.segmentBytes * PREPARE_AT_FRACTION) return;
    this.startPreparation(active + 1);
  }

  private startPreparation(seq: number): Preparation {
    const path = join(this.dir, `${segmentFileName(seq)}.prep${TEMP_SUFFIX}`);
    const prep: Preparation = { seq, path, done: Promise.resolve(), settled: false, failed: false, error: null, abandoned: false };
    const done = prepareAsync(this.fs, path, seq, this.segmentBytes, this.fsync).then(
      async () => {
        prep.settled = true;
        if (prep.abandoned) await this.fs.unlink(prep.path).catch(() => undefined);
      },
      async (e: unknown) => {
        prep.settled = true;
        prep.failed = true;
        prep.error = e;
        await this.fs.unlink(prep.path).catch(() => undefined);
      },
    );
    (prep as { done: Promise<void> }).done = done;
    this.unsettled.add(done);
    void done.then(() => this.unsettled.delete(done));
    this.preparation = prep;
    return prep;
  }

  private abandon(prep: Preparation): void {
    prep.abandoned = true;
    if (prep.settled) {
      try {
        this.fs.unlinkSync(prep.path);
      } catch {
        // already gone
      }
    }
    if (this.preparation === prep) this.preparation = null;
  }

  /**
   * Deletes every segment numbered below `seq` (which must not be above the
   * active one), oldest first, each unlink made durable before the next (so a
   * crash never leaves a hole in the numbering).
   */
  deleteBelowSync(seq: number): void {
    while (this.segments.length > 1 && (this.segments[0] as number) < seq) {
      this.fs.unlinkSync(join(this.dir, segmentFileName(this.segments[0] as number)));
      if (this.fsync) this.fs.syncDirSync(this.dir);
      this.segments.shift();
    }
  }

  async deleteBelow(seq: number): Promise<void> {
    while (this.segments.length > 1 && (this.segments[0] as number) < seq) {
      await this.fs.unlink(join(this.dir, segmentFileName(this.segments[0] as number)));
      if (this.fsync) await this.fs.syncDir(this.dir);
      this.segments.shift();
    }
  }

  /** Closes the active segment; a preallocation under way is finished and removed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fs.closeSync(this.activeFd);
    const prep = this.preparation;
    this.preparation = null;
    if (prep !== null) prep.abandoned = true;
    while (this.unsettled.size > 0) await Promise.all([...this.unsettled]);
    if (prep !== null) await this.fs.unlink(prep.path).catch(() => undefined);
  }
}

function zeroFill(fs: LogFs, fd: number, from: number, to: number): void {
  for (let at = from; at < to;) {
    const n = Math.min(ZERO_CHUNK_BYTES, to - at);
    at += fs.writeSync(fd, ZEROS, 0, n, at);
  }
}

function prepareSync(fs: LogFs, path: string, seq: number, segmentBytes: number, fsync: boolean): void {
  const fd = fs.openSync(path, 'w');
  try {
    zeroFill(fs, fd, 0, segmentBytes);
    const header = segmentHeader(seq);
    fs.writeSync(fd, header, 0, header.length, 0);
    if (fsync) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

async function prepareAsync(fs: LogFs, path: string, seq: number, segmentBytes: number, fsync: boolean): Promise<void> {
  const fd = await fs.open(path, 'w');
  try {
    for (let at = 0; at < segmentBytes;) {
      at += await fs.write(fd, ZEROS, 0, Math.min(ZERO_CHUNK_BYTES, segmentBytes - at), at);
    }
    const header = segmentHeader(seq);
    await fs.write(fd, header, 0, header.length, 0);
    if (fsync) await fs.fsync(fd);
  } finally {
    await fs.close(fd);
  }
}

interface SegmentScan {
  readonly end: number;
  readonly nextFrameNumber: number;
  readonly fileBytes: number;
  /** Why the tail was cut, or null when nothing was cut. */
  readonly cut: string | null;
}

/**
 * Reads a file through one reused buffer (a segment is mostly preallocated
 * zeros: reading it whole into fresh memory costs more than reading it).
 * A view is valid until the next call.
 */
class FileWindow {
  private buf = Buffer.allocUnsafeSlow(READ_WINDOW_BYTES);
  private start = 0;
  private length = 0;

  constructor(
    private readonly fs: LogFs,
    private readonly fd: number,
    readonly size: number,
  ) {}

  /** Bytes [at, at + n) of the file, or null when the file ends before. */
  view(at: number, n: number): Buffer | null {
    if (at + n > this.size) return null;
    if (at >= this.start && at + n <= this.start + this.length) return this.buf.subarray(at - this.start, at - this.start + n);
    if (n > this.buf.length) this.buf = Buffer.allocUnsafeSlow(n);
    const want = Math.min(this.buf.length, this.size - at);
    let got = 0;
    while (got < want) {
      const r = this.fs.readSync(this.fd, this.buf, got, want - got, at + got);
      if (r === 0) break;
      got += r;
    }
    this.start = at;
    this.length = got;
    return got >= n ? this.buf.subarray(0, n) : null;
  }
}

/** The frame at `at` (header included), or why it is not valid ("end" for a zero length). */
function frameAt(w: FileWindow, at: number, expected: number | null): Buffer | string {
  const head = w.view(at, FRAME_HEADER_BYTES);
  if (head === null) return 'incomplete frame header';
  const length = head.readUInt32LE(0);
  if (length === 0) return 'end';
  if (length < FRAME_NUMBER_BYTES || length > FRAME_PAYLOAD_BYTES_MAX) return `frame length ${length}`;
  const frame = w.view(at, FRAME_HEADER_BYTES + length);
  if (frame === null) return `incomplete frame of ${length} bytes`;
  const crc = crc32(frame.subarray(FRAME_HEADER_BYTES), crc32(frame.subarray(0, 4)));
  if (crc !== frame.readUInt32LE(4)) return 'checksum mismatch';
  const n = readU64LE(frame, FRAME_HEADER_BYTES);
  if (n === undefined || (expected !== null && n !== expected)) return `frame number ${String(n)}, ${String(expected)} was expected`;
  return frame;
}

/** The offset of a valid frame numbered after `after` somewhere in the file from `from` on, or -1. */
function findValidFrame(fs: LogFs, fd: number, size: number, from: number, after: number): number {
  const w = new FileWindow(fs, fd, size);
  const check = new FileWindow(fs, fd, size);
  const headBytes = FRAME_HEADER_BYTES + FRAME_NUMBER_BYTES;
  const zeroBlockBytes = 4096;
  let at = from;
  while (at + headBytes <= size) {
    const chunk = w.view(at, Math.min(READ_WINDOW_BYTES, size - at)) as Buffer;
    const limit = chunk.length - headBytes;
    let p = 0;
    for (; p <= limit; p++) {
      const length = chunk.readUInt32LE(p);
      if (length === 0) {
        // Zeros hold no frame: skip a zero block at once (a frame may still start in its last 3 bytes).
        const end = Math.min(chunk.length, p + zeroBlockBytes);
        if (end - p > 4 && chunk.subarray(p, end).equals(ZEROS.subarray(0, end - p))) p = end - 4;
        continue;
      }
      if (length < FRAME_NUMBER_BYTES || length > FRAME_PAYLOAD_BYTES_MAX || at + p + FRAME_HEADER_BYTES + length > size) continue;
      const n = readU64LE(chunk, p + FRAME_HEADER_BYTES);
      if (n === undefined || n <= after || n > after + FRAME_NUMBER_LOOKAHEAD_MAX) continue;
      if (typeof frameAt(check, at + p, null) !== 'string') return at + p;
    }
    at += Math.max(1, p);
  }
  return -1;
}

function isZeroFrom(w: FileWindow, from: number): boolean {
  for (let at = from; at < w.size; at += READ_WINDOW_BYTES) {
    const chunk = w.view(at, Math.min(READ_WINDOW_BYTES, w.size - at)) as Buffer;
    if (!chunk.equals(ZEROS.subarray(0, chunk.length))) return false;
  }
  return true;
}

function scanSegment(fs: LogFs, file: string, seq: number, expectedFirst: number | null, last: boolean, onFrame: (frame: RecoveredFrame) => void): SegmentScan {
  const refuse = (at: number, why: string): DataDirectoryError => new DataDirectoryError(`${file}: at byte ${at}: ${why}; refusing to start on a damaged log`);
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new DataDirectoryError(`cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    const w = new FileWindow(fs, fd, fs.sizeSync(fd));
    const header = w.view(0, SEGMENT_HEADER_BYTES);
    if (header === null || !header.subarray(0, SEGMENT_MAGIC.length).equals(SEGMENT_MAGIC)) {
      throw refuse(0, 'not an ordo log segment (no segment header)');
    }
    if (header.readUInt32LE(20) !== crc32(header.subarray(0, 20))) throw refuse(0, 'segment header checksum mismatch');
    const version = header.readUInt32LE(8);
    if (version !== SEGMENT_FORMAT_VERSION) {
      throw refuse(0, `log format ${version}, this ordo reads format ${SEGMENT_FORMAT_VERSION}`);
    }
    const headerSeq = readU64LE(header, 12);
    if (headerSeq !== seq) throw refuse(0, `header says segment ${String(headerSeq)}`);
    let at = SEGMENT_HEADER_BYTES;
    let expected = expectedFirst;
    let first = true;
    for (;;) {
      const frame = frameAt(w, at, expected);
      if (typeof frame !== 'string') {
        const frameNumber = readU64LE(frame, FRAME_HEADER_BYTES) as number;
        onFrame({ seq, file, offset: at, frameNumber, first, payload: frame.subarray(FRAME_HEADER_BYTES) });
        first = false;
        expected = frameNumber + 1;
        at += frame.length;
        continue;
      }
      const nextFrameNumber = expected ?? 1;
      // Zeros to the end (preallocated space, or none left): the segment ends here.
      if (isZeroFrom(w, at)) return { end: at, nextFrameNumber, fileBytes: w.size, cut: null };
      if (!last) throw refuse(at, frame === 'end' ? 'bytes after the end of the segment' : frame);
      // The last segment: a torn tail unless a valid frame follows the damage.
      const after = findValidFrame(fs, fd, w.size, at + 1, nextFrameNumber - 1);
      if (after >= 0) throw refuse(at, `${frame === 'end' ? 'a hole' : frame}, with valid frames after it (at byte ${after})`);
      return { end: at, nextFrameNumber, fileBytes: w.size, cut: frame === 'end' ? 'stray bytes after the end' : frame };
    }
  } finally {
    fs.closeSync(fd);
  }
}
