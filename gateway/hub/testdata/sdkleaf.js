// A leaf device written with Microsoft's Azure IoT device SDK for Node.js
// (azure-iot-device + azure-iot-device-mqtt, unmodified), driven by the Go
// tests. It prints one JSON object per line on stdout.
//
// Environment:
//   LEAF_CONN       connection string (HostName=...;DeviceId=...;SharedAccessKey=...;GatewayHostName=...)
//   LEAF_CA         CA file the leaf trusts for the gateway's TLS listener
//   LEAF_TOKEN_TTL  token lifetime in seconds (optional); LEAF_TOKEN_MARGIN renews that long before expiry
// Arguments, run in order:
//   send:N[:GAPMS]  send N events (messageId leaf-<i>, property seq=<i>), GAPMS ms apart
//   recv:N          wait until N C2D messages arrived (each completed)
//   sleep:MS        wait
// Lines: {"ev":"connected"} {"ev":"sent","id":...} {"ev":"message",...}
//        {"ev":"disconnect","err":...} {"ev":"error","err":...} {"ev":"done"}
'use strict';
const fs = require('fs');
const { Client, Message, SharedAccessKeyAuthenticationProvider } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const ttl = Number(process.env.LEAF_TOKEN_TTL || 0);
  const margin = Number(process.env.LEAF_TOKEN_MARGIN || 0);
  const auth = ttl > 0
    ? SharedAccessKeyAuthenticationProvider.fromConnectionString(process.env.LEAF_CONN, ttl, margin)
    : SharedAccessKeyAuthenticationProvider.fromConnectionString(process.env.LEAF_CONN);
  auth.on('newTokenAvailable', () => out({ ev: 'token' }));
  const client = Client.fromAuthenticationProvider(auth, Mqtt);
  client.setOptions({ ca: fs.readFileSync(process.env.LEAF_CA, 'utf8'), keepalive: 30 });
  const messages = [];
  client.on('message', (m) => {
    const props = {};
    for (let i = 0; i < m.properties.count(); i++) {
      const p = m.properties.getItem(i);
      props[p.key] = p.value;
    }
    messages.push(m);
    out({ ev: 'message', messageId: m.messageId, correlationId: m.correlationId, props, body: m.data.toString() });
    client.complete(m, () => {});
  });
  client.on('disconnect', (err) => out({ ev: 'disconnect', err: err ? String(err.message || err) : '' }));
  client.on('error', (err) => out({ ev: 'error', err: String(err.message || err) }));
  try {
    await client.open();
  } catch (err) {
    out({ ev: 'open-failed', err: String(err.message || err), name: err.constructor && err.constructor.name });
    process.exit(2);
  }
  out({ ev: 'connected' });
  for (const a of process.argv.slice(2)) {
    const [op, n, gap] = a.split(':');
    if (op === 'send') {
      for (let i = 0; i < Number(n); i++) {
        const m = new Message(JSON.stringify({ seq: i }));
        m.messageId = 'leaf-' + i;
        m.contentType = 'application/json';
        m.contentEncoding = 'utf-8';
        m.properties.add('seq', String(i));
        m.properties.add('alert level', 'high temp');
        await client.sendEvent(m);
        out({ ev: 'sent', id: m.messageId });
        if (gap) await sleep(Number(gap));
      }
    } else if (op === 'recv') {
      while (messages.length < Number(n)) await sleep(20);
    } else if (op === 'sleep') {
      await sleep(Number(n));
    } else {
      throw new Error('unknown action ' + a);
    }
  }
  await client.close();
  out({ ev: 'done' });
  process.exit(0);
}

main().catch((err) => {
  out({ ev: 'error', err: String(err && (err.stack || err.message) || err) });
  process.exit(1);
});
