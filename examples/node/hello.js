// A Node.js function for Flare:
//   flare env create --name node --runtime node
//   flare fn create --name jshello --env node --code examples/node/hello.js
//   curl "localhost:8080/fn/jshello?name=ada"
module.exports = async (context) => {
  const name = context.request.query.name || 'world';
  console.log('greeting', name); // goes to `flare fn logs --name jshello`
  return { status: 200, body: { hello: name, from: 'node' } };
};
