import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { EntryType, MESSAGE_TYPES, newMessage, type Entry, type Message } from '../src/raft/index.js';
import { MessageDecodeError, decodeFrame, decodeMessage, encodeGroupMessages, encodeMessage, type GroupMessage } from '../src/multiraft/message-codec.js';

const id = fc.string({ maxLength: 30 });
const num = fc.oneof(fc.nat({ max: 1000 }), fc.maxSafeNat());
const bytes = fc.uint8Array({ maxLength: 80 });

const entry: fc.Arbitrary<Entry> = fc
  .record({ term: num, index: num, type: fc.constantFrom(EntryType.Normal, EntryType.ConfChange), data: bytes })
  .map((r) => ({ ...r }));

const message: fc.Arbitrary<Message> = fc
  .record({
    type: fc.constantFrom(...MESSAGE_TYPES),
    from: id,
    to: id,
    term: num,
    index: num,
    logTerm: num,
    entries: fc.array(entry, { maxLength: 5 }),
    commit: num,
    reject: fc.boolean(),
    hintIndex: num,
    hintTerm: num,
    readSeq: num,
    sentTick: num,
    snapshotMeta: fc.option(
      fc
        .record({ index: num, term: num, voters: fc.array(id, { maxLength: 5 }), learners: fc.array(id, { maxLength: 3 }) })
        .map((r) => ({ index: r.index, term: r.term, conf: { voters: r.voters, learners: r.learners } })),
      { nil: null },
    ),
    chunk: fc.option(bytes, { nil: null }),
    offset: num,
    totalBytes: num,
    transfer: fc.boolean(),
    requestId: num,
  })
  .map((r) => {
    const m = newMessage(r.type, r.from, r.to, r.term);
    return { ...m, ...r };
  });

describe('multiraft message codec', () => {
  it('round-trips every message', () => {
    fc.assert(
      fc.property(message, (m) => {
        assert.deepStrictEqual(decodeMessage(encodeMessage(m)), m);
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips frames of many groups', () => {
    const item: fc.Arbitrary<GroupMessage> = fc.record({ groupId: fc.nat({ max: 1 << 20 }), message }).map((r) => ({ ...r }));
    fc.assert(
      fc.property(fc.array(item, { maxLength: 8 }), (items) => {
        assert.deepStrictEqual(decodeFrame(encodeGroupMessages(items)), items);
      }),
      { numRuns: 300 },
    );
  });

  it('a truncated or extended frame is a clean decode error', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ groupId: fc.nat(), message }), { minLength: 1, maxLength: 3 }), fc.nat(), (items, cut) => {
        const frame = encodeGroupMessages(items);
        const at = cut % frame.length;
        assert.throws(() => decodeFrame(frame.subarray(0, at)), MessageDecodeError);
        const longer = new Uint8Array(frame.length + 1);
        longer.set(frame);
        assert.throws(() => decodeFrame(longer), MessageDecodeError);
      }),
      { numRuns: 300 },
    );
  });

  it('random bytes never throw anything but a decode error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (junk) => {
        for (const input of [junk, Uint8Array.of(1, ...junk)]) {
          try {
            decodeFrame(input);
          } catch (e) {
            assert.ok(e instanceof MessageDecodeError, String(e));
          }
          try {
            decodeMessage(input);
          } catch (e) {
            assert.ok(e instanceof MessageDecodeError, String(e));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects unknown versions, types and huge counts', () => {
    const m = newMessage('append', 'n1', 'n2', 3);
    const good = encodeMessage(m);
    const badVersion = Uint8Array.from(good);
    badVersion[0] = 9;
    assert.throws(() => decodeMessage(badVersion), /unknown message version/);
    const badType = Uint8Array.from(good);
    badType[1] = 200;
    assert.throws(() => decodeMessage(badType), /unknown message type/);
    // frame claiming 2^40 messages in 10 bytes
    assert.throws(() => decodeFrame(Uint8Array.of(1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20)), MessageDecodeError);
  });
});
