// One instance registered the way node-etcd users lay services out, with the npm
// package etcd3 (v3 API): /services/<name>/<datacenter>/<uuid> = {"hostname","port"}
// with the port as a string, on a lease. Prints "registered", keeps the lease alive
// until killed.
//
// usage: node registrant.mjs SERVER NAME DATACENTER HOST PORT   (NODE_PATH: the npm cache)
import { createRequire } from "module";
import { randomUUID } from "crypto";

const require = createRequire(process.env.HERALD_NPM_DIR + "/node_modules/");
const { Etcd3 } = require("etcd3");
const [server, name, dc, host, port] = process.argv.slice(2);
const client = new Etcd3({ hosts: "http://" + server });
const lease = client.lease(2);
await lease.put(`/services/${name}/${dc}/${randomUUID()}`).value(JSON.stringify({ hostname: host, port: String(port) }));
console.log("registered");
setInterval(() => {}, 1000);
