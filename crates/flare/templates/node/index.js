'use strict';
// {{name}}: a Flare function. /?name=ada answers "Hello, ada!" whatever the
// method: HTTP callers send GET, timer and queue triggers POST.
//
// context.request has method, url (path and query), path, query (the first
// value of each parameter), headers (lower-case names) and body (a Buffer).
// Return { status, headers, body }: a string body is sent as text/plain,
// a Buffer as bytes, any other value as JSON.
module.exports = async (context) => {
  const { query } = context.request;
  const name = query.name || 'world';
  console.log(`greeting ${name}`); // goes to `flare fn logs`
  return { status: 200, body: `Hello, ${name}!\n` };
};
