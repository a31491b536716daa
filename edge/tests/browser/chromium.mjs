// The flags every test runs Debian's Chromium with: headless-friendly, and kept off the network —
// --host-resolver-rules maps every name but localhost and 127.0.0.1 to nothing — with the test certificate
// accepted by its SPKI hash (Chromium takes no custom CA over QUIC). One definition for play.mjs and web.mjs.
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';

/// The launch arguments for a test whose servers present the certificate in `certPath` (PEM).
export function chromiumArgs(certPath) {
  const spki = createHash('sha256')
    .update(new X509Certificate(readFileSync(certPath)).publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64');
  return ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--mute-audio', '--disable-dev-shm-usage',
    '--autoplay-policy=no-user-gesture-required',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    '--ignore-certificate-errors-spki-list=' + spki,
    // A page answered by the driver (no address of its own) would have its requests to loopback servers held
    // by Local Network Access for a permission prompt no one answers.
    '--disable-features=LocalNetworkAccessChecks'];
}
