package probe;

import flare.Handler;
import flare.Request;
import flare.Response;

/** A Java function for Flare's tests: what it does depends on the path. */
public class Probe implements Handler {
    /** Per class loader: a fresh worker starts again at 0. */
    private static int calls;

    @Override
    public Response handle(Request request) throws Exception {
        String path = request.path().split("\\?")[0];
        switch (path) {
            case "/count":
                synchronized (Probe.class) {
                    return Response.ok(Integer.toString(++calls));
                }
            case "/env":
                return Response.ok(String.valueOf(Request.env(request.query().get("name"))));
            case "/echo":
                return new Response(201, request.body()).header("x-method", request.method());
            case "/throw":
                System.err.println("about to throw");
                throw new IllegalStateException("deliberate failure");
            case "/late":
                // A thread that outlives its call: its output is not the call's.
                new Thread() {
                    @Override
                    public void run() {
                        try {
                            Thread.sleep(300);
                        } catch (InterruptedException e) {
                            return;
                        }
                        System.out.println("late line");
                    }
                }.start();
                return Response.ok("started");
            case "/exit":
                System.exit(3);
                return null;
            default:
                return Response.text(404, "no such probe\n");
        }
    }
}
