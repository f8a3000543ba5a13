// A Node.js function for Flare's tests.
const instance = Math.random().toString(16).slice(2);

module.exports = async (context) => {
  const { request } = context;
  if (request.path === '/raise') {
    console.log('about to throw');
    throw new Error('deliberate failure');
  }
  if (request.path === '/sleep') {
    await new Promise((resolve) => setTimeout(resolve, Number(request.query.ms || 500)));
    console.log('slept', request.query.tag);
    return { body: { instance, tag: request.query.tag } };
  }
  if (request.path === '/id') return { body: instance };
  return {
    status: 200,
    headers: { 'x-runtime': 'node' },
    body: { hello: request.query.name || 'node', method: request.method, length: request.body.length },
  };
};
