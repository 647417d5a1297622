// Only plain JavaScript from node_modules goes through babel (TypeScript uses ts-jest).
module.exports = require('@jupyterlab/testutils/lib/babel.config');
