/**
 * Certificates for the TLS tests, made fresh by the `openssl` command line in a temporary
 * directory: a test CA, a server certificate for 127.0.0.1/localhost signed by it, client
 * certificates signed by it, and a second, untrusted CA with a client certificate of its own.
 * EC P-256 keys: quick to make, and what a small device would use.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface KeyPair {
  /** Paths of the PEM files. */
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

export interface TlsFixture {
  dir: string;
  ca: KeyPair;
  server: KeyPair;
  /** A client certificate with this subject CN, signed by `ca`. */
  client(commonName: string): KeyPair;
  /** A CA the broker does not trust, and a client certificate it signed. */
  rogueCa: KeyPair;
  rogueClient(commonName: string): KeyPair;
  remove(): void;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`openssl ${args.join(' ')} failed (the TLS tests need the openssl command line): ${String(error)}\n${stderr}`);
  }
}

function load(dir: string, name: string): KeyPair {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}

const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function makeCa(dir: string, name: string): KeyPair {
  openssl(
    [
      'req', '-x509', ...KEY, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  return load(dir, name);
}

function sign(dir: string, ca: string, name: string, commonName: string, extensions: string): KeyPair {
  openssl(['req', ...KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${commonName}`], dir);
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(
    [
      'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-set_serial', `0x${randomBytes(8).toString('hex')}`,
      '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`,
    ],
    dir,
  );
  return load(dir, name);
}

export function makeTlsFixture(): TlsFixture {
  const dir = mkdtempSync(join(tmpdir(), 'broker-tls-'));
  const ca = makeCa(dir, 'ca');
  const server = sign(dir, 'ca', 'server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  const rogueCa = makeCa(dir, 'rogue-ca');
  const clients = new Map<string, KeyPair>();
  const client = (ca: string, commonName: string) => {
    const name = `${ca}-client-${commonName.replace(/[^a-z0-9]/gi, '_')}`;
    let pair = clients.get(name);
    if (!pair) {
      pair = sign(dir, ca, name, commonName, 'extendedKeyUsage=clientAuth\n');
      clients.set(name, pair);
    }
    return pair;
  };
  return {
    dir,
    ca,
    server,
    rogueCa,
    client: (commonName) => client('ca', commonName),
    rogueClient: (commonName) => client('rogue-ca', commonName),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
