#!/usr/bin/env node
// kinesalite's own CLI listens on every interface; this one listens on --host
// (127.0.0.1 unless told) and takes the same options: --port, --path,
// --createStreamMs, --deleteStreamMs, --updateStreamMs, --shardLimit, --ssl.
// scripts/test-servers.sh installs it as $REMIX_TEST_CACHE/bin/kinesalite.
var path = require('path')
var dir = path.join(__dirname, '..', 'npm', 'lib', 'node_modules', 'kinesalite')
var argv = require(require.resolve('minimist', { paths: [dir] }))(process.argv.slice(2))
var host = argv.host || '127.0.0.1'
var server = require(path.join(dir, 'index.js'))(argv).listen(argv.port || 4567, host, function () {
  var a = server.address()
  console.log('Listening at %s://%s:%s', argv.ssl ? 'https' : 'http', a.address, a.port)
})
process.on('SIGTERM', function () { server.close(); process.exit(0) })
