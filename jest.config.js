// Jest runs the panel's unit tests (labextension/src/__tests__) in jsdom, on top of
// JupyterLab's shared configuration (ts-jest, CSS/SVG mocks, ESM allow-list).
const jestJupyterLab = require('@jupyterlab/testutils/lib/jest-config');

const esModules = [
  '@codemirror',
  '@jupyter/ydoc',
  '@jupyterlab/',
  '@jupyter/react-components',
  '@jupyter/web-components',
  '@microsoft',
  'exenv-es6',
  'lib0',
  'nanoid',
  'vscode-ws-jsonrpc',
  'y-protocols',
  'y-websocket',
  'yjs'
].join('|');

const baseConfig = jestJupyterLab(__dirname);

module.exports = {
  ...baseConfig,
  // plain output: the shared config's junit and GitHub reporters only make files here
  reporters: ['default'],
  testRegex: 'labextension/src/__tests__/.*\\.spec\\.tsx?$',
  // the built copy of package.json under server_extension/labextension/ confuses jest-haste-map
  modulePathIgnorePatterns: [
    '<rootDir>/jupyterhub_dask_gateway/server_extension/labextension/',
    '<rootDir>/labextension/lib/'
  ],
  transformIgnorePatterns: [`/node_modules/(?!${esModules}).+`]
};
