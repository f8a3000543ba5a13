# A Python function for Flare:
#   flare env create --name python --runtime python
#   flare fn create --name pyhello --env python --code examples/python/hello.py
#   curl "localhost:8080/fn/pyhello?name=ada"
def main(req):
    name = req.query.get("name", "world")
    print("greeting", name)  # goes to `flare fn logs --name pyhello`
    return {"hello": name, "from": "python"}
