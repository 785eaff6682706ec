/**
 * The logger the command line prints with (`--log-level`, `--log-format`): levels filter, debug is
 * free when off, a call's fields come out readable in text and as keys in JSON, and whatever a
 * field holds (a client id with a newline or a quote in it) it stays on its one line.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { consoleLogger, jsonLine, LOG_LEVELS, textLine, type LogFields, type Logger, type LogLevel } from '../../src/logger.js';

const TIME = new Date('2026-12-03T10:00:00.000Z');

afterEach(() => {
  vi.restoreAllMocks();
});

/** Every line the logger prints, as [stream, line]. */
function capture(): Array<['stdout' | 'stderr', string]> {
  const lines: Array<['stdout' | 'stderr', string]> = [];
  vi.spyOn(console, 'log').mockImplementation((line: string) => lines.push(['stdout', line]));
  vi.spyOn(console, 'error').mockImplementation((line: string) => lines.push(['stderr', line]));
  return lines;
}

function logAtEveryLevel(log: Logger): void {
  log.debug?.('d');
  log.info('i');
  log.warn('w');
  log.error('e');
}

describe('levels', () => {
  it.each([
    ['debug', ['debug d', 'info i', 'warn w', 'error e']],
    ['info', ['info i', 'warn w', 'error e']],
    ['warn', ['warn w', 'error e']],
    ['error', ['error e']],
  ] as Array<[LogLevel, string[]]>)('at %s, only that level and the more severe ones are printed', (level, expected) => {
    const lines = capture();
    logAtEveryLevel(consoleLogger({ level }));
    expect(lines.map(([, line]) => line.replace(/^\S+ /, ''))).toEqual(expected);
  });

  it('info is the default; debug and info go to stdout, warn and error to stderr', () => {
    const lines = capture();
    logAtEveryLevel(consoleLogger({ level: 'debug' }));
    expect(lines.map(([stream]) => stream)).toEqual(['stdout', 'stdout', 'stderr', 'stderr']);
    lines.length = 0;
    logAtEveryLevel(consoleLogger());
    expect(lines.map(([, line]) => line.split(' ')[1])).toEqual(['info', 'warn', 'error']);
  });

  it('with debug off, a debug call does not even build its message or fields', () => {
    capture();
    const log = consoleLogger({ level: 'info' });
    const build = vi.fn(() => 'expensive');
    log.debug?.(build(), { detail: build() });
    expect(log.debug).toBeUndefined();
    expect(build).not.toHaveBeenCalled();
  });

  it('a line starts with the time (ISO 8601, UTC) and the level, in text as today', () => {
    const lines = capture();
    consoleLogger().info('listening on 127.0.0.1:1883');
    expect(lines).toHaveLength(1);
    expect(lines[0]![1]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info listening on 127\.0\.0\.1:1883$/);
  });
});

describe('under journald', () => {
  it('lines on a stream that goes to journald start with their syslog priority; the others do not', () => {
    const lines = capture();
    logAtEveryLevel(consoleLogger({ level: 'debug', journal: { stdout: true, stderr: false } }));
    logAtEveryLevel(consoleLogger({ level: 'debug', journal: { stdout: false, stderr: true } }));
    expect(lines.map(([stream, line]) => `${stream} ${line.replace(/\d{4}-\S+ /, '')}`)).toEqual([
      'stdout <7>debug d',
      'stdout <6>info i',
      'stderr warn w',
      'stderr error e',
      'stdout debug d',
      'stdout info i',
      'stderr <4>warn w',
      'stderr <3>error e',
    ]);
  });
});

describe('text format', () => {
  it('fields follow the message as key=value; plain values bare, others quoted and escaped; undefined left out', () => {
    const fields: LogFields = {
      clientId: 'sensor-1',
      address: '[::1]:50210',
      protocolVersion: 4,
      clean: false,
      user: undefined,
      reason: 'keepalive expired',
      odd: 'a"b\nc=d',
      empty: '',
    };
    expect(textLine(TIME, 'info', 'client connected', fields)).toBe(
      '2026-12-03T10:00:00.000Z info client connected clientId=sensor-1 address=[::1]:50210 protocolVersion=4 clean=false ' +
        'reason="keepalive expired" odd="a\\"b\\nc=d" empty=""',
    );
  });

  it('a call without fields prints exactly what it printed before fields existed', () => {
    expect(textLine(TIME, 'warn', 'client "a b" refused')).toBe('2026-12-03T10:00:00.000Z warn client "a b" refused');
  });

  it('no control, DEL, C1 or bidi character of a client-chosen string reaches the line raw, in the message or a field', () => {
    const hostile = 'id\u001b[2J\u007f\u0085\u202e\u2028x';
    const line = textLine(TIME, 'warn', `client ${JSON.stringify(hostile)} refused`, { clientId: hostile });
    expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202e\u2028]/);
    expect(line).toContain('\\u001b[2J');
  });

  it('property: any field values stay on one line and read back exactly', () => {
    fc.assert(
      fc.property(fieldsArbitrary(), (fields) => {
        const line = textLine(TIME, 'info', 'm', fields);
        expect(line).not.toMatch(/[\n\r]/);
        expect(readTextFields(line.slice('2026-12-03T10:00:00.000Z info m'.length))).toEqual(
          Object.entries(fields).flatMap(([key, value]) => (value === undefined ? [] : [[key, String(value)]])),
        );
      }),
    );
  });
});

describe('JSON format', () => {
  it('one object: time, level, message first, then the fields with their types', () => {
    const line = jsonLine(TIME, 'warn', 'client "x" refused', { clientId: 'x', protocolVersion: 3, clean: true, user: undefined });
    expect(line).toBe('{"time":"2026-12-03T10:00:00.000Z","level":"warn","message":"client \\"x\\" refused","clientId":"x","protocolVersion":3,"clean":true}');
  });

  it('a field named time, level or message does not replace the line’s own', () => {
    expect(JSON.parse(jsonLine(TIME, 'error', 'real', { message: 'fake', level: 'info', time: 'never', other: 1 }))).toEqual({
      time: '2026-12-03T10:00:00.000Z',
      level: 'error',
      message: 'real',
      other: 1,
    });
  });

  it('consoleLogger({ format: "json" }) prints such lines, at every level', () => {
    const lines = capture();
    const log = consoleLogger({ level: 'debug', format: 'json' });
    log.debug?.('d', { n: 1 });
    log.info('i');
    log.warn('w');
    log.error('e', { clientId: 'c' });
    expect(lines.map(([, line]) => JSON.parse(line) as unknown)).toEqual([
      { time: expect.any(String), level: 'debug', message: 'd', n: 1 },
      { time: expect.any(String), level: 'info', message: 'i' },
      { time: expect.any(String), level: 'warn', message: 'w' },
      { time: expect.any(String), level: 'error', message: 'e', clientId: 'c' },
    ]);
  });

  it('property: any message and fields make one line that parses back to them', () => {
    fc.assert(
      fc.property(fc.constantFrom(...LOG_LEVELS), fc.string({ unit: 'binary' }), fieldsArbitrary(), (level, message, fields) => {
        const line = jsonLine(TIME, level, message, fields);
        expect(line).not.toMatch(/[\n\r]/);
        const defined = Object.fromEntries(Object.entries(fields).filter(([key, value]) => value !== undefined && !['time', 'level', 'message'].includes(key)));
        expect(JSON.parse(line)).toEqual({ time: TIME.toISOString(), level, message, ...defined });
      }),
    );
  });
});

/** Field names as code gives them (the reserved three among them), values of any kind and content. */
function fieldsArbitrary(): fc.Arbitrary<Record<string, string | number | boolean | undefined>> {
  return fc.dictionary(
    fc.oneof(fc.stringMatching(/^[a-z][A-Za-z0-9]{0,8}$/), fc.constantFrom('time', 'level', 'message')),
    fc.oneof(fc.string({ unit: 'binary' }), fc.constantFrom('', 'sensor-1', '10.0.0.5:1883', 'a=b', '"'), fc.integer(), fc.boolean(), fc.constant(undefined)),
    { noNullPrototype: true },
  );
}

/** Reads ` key=value` pairs back: a quoted value is a JSON string, a bare one runs to the next space. */
function readTextFields(rest: string): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  const pair = /^ ([A-Za-z][A-Za-z0-9]*)=("(?:[^"\\]|\\.)*"|[^\s"]+)/;
  while (rest.length > 0) {
    const match = pair.exec(rest);
    if (!match) throw new Error(`not a key=value pair: ${JSON.stringify(rest)}`);
    pairs.push([match[1]!, match[2]!.startsWith('"') ? (JSON.parse(match[2]!) as string) : match[2]!]);
    rest = rest.slice(match[0].length);
  }
  return pairs;
}
