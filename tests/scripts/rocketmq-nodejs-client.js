// Drives an actormq node's RocketMQ 5 gRPC endpoint with the official
// Node.js client (npm rocketmq-client-nodejs), plain text.
//
//   node rocketmq-nodejs-client.js produce HOST:PORT TOPIC
//     Sends two NORMAL messages (tag, keys, a property), three FIFO
//     messages of one message group, a DELAY message (2 s) and two
//     transactional ones, one committed, one rolled back. Prints one JSON
//     line per message: {"kind", "body", "message_id"}.
//
//   node rocketmq-nodejs-client.js consume HOST:PORT GROUP TOPIC COUNT
//     A SimpleConsumer receives until COUNT distinct bodies were acked.
//     The first message it gets is not acked at first: its invisible
//     duration is changed to 1 s and it must come back (delivery attempt
//     2) before it is acked. Prints one JSON line per delivery: {"body",
//     "attempt", "tag", "keys", "properties"}.
//
//   node rocketmq-nodejs-client.js push HOST:PORT GROUP TOPIC COUNT WORK_MS
//     A PushConsumer (FIFO when the broker's settings say the group is)
//     whose listener takes WORK_MS per message, then succeeds. Prints one
//     JSON line when a consumption starts: {"body", "group", "attempt"};
//     done once COUNT distinct bodies were consumed.
//
//   node rocketmq-nodejs-client.js check HOST:PORT TOPIC
//     Sends two transactional messages and ends neither: the broker's
//     check (over Telemetry) asks this producer, whose checker answers
//     COMMIT for "check-commit" and ROLLBACK for "check-rollback". Prints
//     {"sent": [ids]}, then one line per check: {"checked", "topic",
//     "tag", "lang", "message_id"}; stays up until its stdin is closed.
//
// Exits non-zero when something fails or 60 s pass.
'use strict';

const {
  Producer, SimpleConsumer, PushConsumer, ConsumeResult,
} = require('rocketmq-client-nodejs');
const { TransactionResolution } = require(
  'rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

const line = v => process.stdout.write(JSON.stringify(v) + '\n');

// The client's own log goes to stderr (its default is a file under
// ~/logs/rocketmq); warnings and errors only.
const logger = {
  info() {},
  debug() {},
  warn(...args) { process.stderr.write(`WARN ${args.join(' ')}\n`); },
  error(...args) { process.stderr.write(`ERROR ${args.join(' ')}\n`); },
};

async function produce(endpoints, topic) {
  const producer = new Producer({
    endpoints,
    namespace: '',
    logger,
    topics: [ topic ],
    // Not used: every transaction is ended here.
    checker: { async check() { return TransactionResolution.COMMIT; } },
  });
  await producer.startup();
  try {
    for (let i = 0; i < 2; i++) {
      const body = `node-${i}`;
      const r = await producer.send({
        topic,
        tag: 'NodeTag',
        keys: [ `node-key-${i}` ],
        properties: new Map([[ 'lang', 'nodejs' ]]),
        body: Buffer.from(body),
      });
      line({ kind: 'normal', body, message_id: r.messageId });
    }
    for (let i = 0; i < 3; i++) {
      const body = `fifo-${i}`;
      const r = await producer.send({
        topic, tag: 'NodeTag', messageGroup: 'node-group', body: Buffer.from(body),
      });
      line({ kind: 'fifo', body, message_id: r.messageId });
    }
    {
      const body = 'delay-0';
      const r = await producer.send({
        topic, tag: 'NodeTag', delay: 2000, body: Buffer.from(body),
      });
      line({ kind: 'delay', body, message_id: r.messageId, sent_at_ms: Date.now() });
    }
    for (const kind of [ 'commit', 'rollback' ]) {
      const body = `${kind}-0`;
      const tx = producer.beginTransaction();
      const r = await producer.send({ topic, tag: 'NodeTag', body: Buffer.from(body) }, tx);
      if (kind === 'commit') {
        await tx.commit();
      } else {
        await tx.rollback();
      }
      line({ kind, body, message_id: r.messageId });
    }
  } finally {
    await producer.shutdown();
  }
}

async function consume(endpoints, group, topic, count) {
  const consumer = new SimpleConsumer({
    endpoints,
    namespace: '',
    logger,
    consumerGroup: group,
    subscriptions: new Map([[ topic, '*' ]]),
    awaitDuration: 2000,
  });
  await consumer.startup();
  const acked = new Set();
  let changed;
  try {
    while (acked.size < count) {
      const messages = await consumer.receive(16, 10000);
      for (const m of messages) {
        const body = m.body.toString();
        line({
          body,
          attempt: m.deliveryAttempt,
          tag: m.tag,
          keys: m.keys,
          properties: Object.fromEntries(m.properties),
        });
        if (changed === undefined) {
          // Not acked: visible again in 1 s, delivered once more.
          changed = body;
          await consumer.changeInvisibleDuration(m, 1000);
          continue;
        }
        await consumer.ack(m);
        acked.add(body);
      }
    }
  } finally {
    await consumer.shutdown();
  }
}

async function push(endpoints, group, topic, count, workMs) {
  const done = new Set();
  let finished;
  const all = new Promise(resolve => { finished = resolve; });
  const consumer = new PushConsumer({
    endpoints,
    namespace: '',
    logger,
    consumerGroup: group,
    subscriptions: new Map([[ topic, '*' ]]),
    messageListener: {
      async consume(m) {
        const body = m.body.toString();
        line({ body, group: m.messageGroup, attempt: m.deliveryAttempt });
        await new Promise(resolve => setTimeout(resolve, workMs));
        done.add(body);
        if (done.size >= count) {
          finished();
        }
        return ConsumeResult.SUCCESS;
      },
    },
  });
  await consumer.startup();
  await all;
  // The client acks after the listener returned, and tells no one: give
  // the last acks a moment before stopping.
  await new Promise(resolve => setTimeout(resolve, 1000));
  await consumer.shutdown();
}

async function check(endpoints, topic) {
  const checker = {
    async check(m) {
      const body = m.body.toString();
      line({
        checked: body,
        topic: m.topic,
        tag: m.tag,
        lang: m.properties.get('lang'),
        message_id: m.messageId,
      });
      return body === 'check-commit' ?
        TransactionResolution.COMMIT : TransactionResolution.ROLLBACK;
    },
  };
  const producer = new Producer({
    endpoints, namespace: '', logger, topics: [ topic ], checker,
  });
  await producer.startup();
  const sent = [];
  for (const body of [ 'check-commit', 'check-rollback' ]) {
    const tx = producer.beginTransaction();
    const r = await producer.send({
      topic, tag: 'TxTag', properties: new Map([[ 'lang', 'nodejs' ]]),
      body: Buffer.from(body),
    }, tx);
    sent.push(r.messageId);
    // Neither committed nor rolled back: left to the check.
  }
  line({ sent });
  // The test closes stdin once it saw the broker record the answers.
  await new Promise(resolve => {
    process.stdin.on('end', resolve);
    process.stdin.resume();
  });
  await producer.shutdown();
}

async function main() {
  const [ mode, ...args ] = process.argv.slice(2);
  const deadline = setTimeout(() => {
    process.stderr.write('timed out\n');
    process.exit(2);
  }, 60000);
  if (mode === 'produce') {
    await produce(args[0], args[1]);
  } else if (mode === 'check') {
    await check(args[0], args[1]);
  } else if (mode === 'push') {
    await push(args[0], args[1], args[2], Number(args[3]), Number(args[4]));
  } else if (mode === 'consume') {
    await consume(args[0], args[1], args[2], Number(args[3]));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  clearTimeout(deadline);
  // The client's timers (heartbeats, settings sync) would keep it alive.
  process.exit(0);
}

main().catch(e => {
  process.stderr.write(`${e && e.stack || e}\n`);
  process.exit(1);
});
