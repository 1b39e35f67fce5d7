// A leaf device written with Microsoft's Azure IoT device SDK for Node.js
// (azure-iot-device + azure-iot-device-mqtt, unmodified) that uses its
// device twin and answers direct methods, driven by the Go tests. It prints
// one JSON object per line on stdout.
//
// Environment:
//   LEAF_CONN  connection string (HostName=...;DeviceId=...;SharedAccessKey=...;GatewayHostName=...)
//   LEAF_CA    CA file the leaf trusts for the gateway's TLS listener
// Direct methods, answered from the start: "echo" answers 200 with
// {"echo":<payload>}; "slow" never answers.
// Arguments, run in order:
//   twin          getTwin, print it, and from then on print every desired update
//   report:JSON   update the reported properties with JSON
//   wait          stay connected until killed
// Lines: {"ev":"connected"} {"ev":"twin","desired":...,"reported":...} {"ev":"reported"}
//        {"ev":"report-failed","err":...} {"ev":"desired","patch":...} {"ev":"method","name":...,"payload":...}
//        {"ev":"disconnect","err":...} {"ev":"error","err":...} {"ev":"done"}
'use strict';
const fs = require('fs');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const plain = (o) => JSON.parse(JSON.stringify(o)); // drops the SDK's methods (update)

async function main() {
  const client = Client.fromConnectionString(process.env.LEAF_CONN, Mqtt);
  client.setOptions({ ca: fs.readFileSync(process.env.LEAF_CA, 'utf8'), keepalive: 30 });
  client.on('disconnect', (err) => out({ ev: 'disconnect', err: err ? String(err.message || err) : '' }));
  client.on('error', (err) => out({ ev: 'error', err: String(err.message || err) }));
  try {
    await client.open();
  } catch (err) {
    out({ ev: 'open-failed', err: String(err.message || err) });
    process.exit(2);
  }
  out({ ev: 'connected' });
  client.onDeviceMethod('echo', (req, res) => {
    out({ ev: 'method', name: req.methodName, payload: req.payload === undefined ? null : req.payload });
    res.send(200, { echo: req.payload === undefined ? null : req.payload }, () => {});
  });
  client.onDeviceMethod('slow', (req) => out({ ev: 'method', name: req.methodName, payload: req.payload === undefined ? null : req.payload }));
  let twin;
  for (const a of process.argv.slice(2)) {
    const i = a.indexOf(':');
    const op = i < 0 ? a : a.slice(0, i);
    const arg = i < 0 ? '' : a.slice(i + 1);
    if (op === 'twin') {
      twin = await client.getTwin();
      out({ ev: 'twin', desired: plain(twin.properties.desired), reported: plain(twin.properties.reported) });
      twin.on('properties.desired', (patch) => out({ ev: 'desired', patch: plain(patch) }));
    } else if (op === 'report') {
      try {
        await new Promise((resolve, reject) => twin.properties.reported.update(JSON.parse(arg), (err) => (err ? reject(err) : resolve())));
        out({ ev: 'reported' });
      } catch (err) {
        out({ ev: 'report-failed', err: String(err.message || err) });
      }
    } else if (op === 'wait') {
      out({ ev: 'waiting' });
      await new Promise(() => {});
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
