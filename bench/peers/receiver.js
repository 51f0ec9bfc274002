// SPDX-License-Identifier: MIT
// A change-notification receiver in the shape of Microsoft's Node.js webhook
// samples: express, the validation echo on ?validationToken, a clientState
// check on every item, a push into an in-memory queue, and 202. It serves
// HTTPS with the certificate given, so that it gets the same load as callrecd.
//
// Usage: node receiver.js PORT CERT_PEM KEY_PEM CLIENT_STATE
'use strict';

const fs = require('fs');
const https = require('https');
const express = require('express');

const [port, certFile, keyFile, clientState] = process.argv.slice(2);
if (!port || !certFile || !keyFile || !clientState) {
  console.error('usage: node receiver.js PORT CERT_PEM KEY_PEM CLIENT_STATE');
  process.exit(2);
}

// Notifications wait here for a worker, as in the samples; nothing takes them,
// so the queue is capped to keep memory flat during a benchmark.
const QUEUE_MAX = 100000;
const queue = [];

const app = express();
app.use(express.json({ limit: '1mb' }));

app.post('/notify', (req, res) => {
  if (req.query && req.query.validationToken) {
    res.set('Content-Type', 'text/plain');
    res.status(200).send(req.query.validationToken);
    return;
  }
  const items = (req.body && Array.isArray(req.body.value)) ? req.body.value : [];
  for (const item of items) {
    if (item.clientState !== clientState) {
      res.sendStatus(202); // the samples drop forged items and still acknowledge
      return;
    }
  }
  for (const item of items) {
    if (queue.length >= QUEUE_MAX) {
      queue.shift();
    }
    queue.push(item);
  }
  res.sendStatus(202);
});

const server = https.createServer({
  cert: fs.readFileSync(certFile),
  key: fs.readFileSync(keyFile),
  minVersion: 'TLSv1.2',
}, app);
server.listen(Number(port), '127.0.0.1');

process.on('SIGTERM', () => process.exit(0));
