// SVG files are bundled as strings (JupyterLab's builder and jest both do so).
declare module '*.svg' {
  const value: string;
  export default value;
}
