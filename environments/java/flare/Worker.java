package flare;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.reflect.Constructor;
import java.net.URL;
import java.net.URLClassLoader;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.function.Function;
import java.util.jar.Manifest;

/**
 * Flare's Java worker: speaks environments/PROTOCOL.md on FLARE_SOCKET.
 * On `specialize` it loads the function's classes (the package, unpacked
 * at /code: classes and any jars in it) with a class loader of their own
 * and makes one instance of the handler class: the entrypoint, or the
 * manifest's Flare-Handler or Main-Class. Standard library only.
 */
public final class Worker {
    /** The function's environment variables, configs and secrets. */
    static final Map<String, String> ENV = new ConcurrentHashMap<>();

    /** Bytes of one call's output sent to Flare; the rest is counted. */
    private static final int LOG_BUDGET = 1 << 20;

    private static OutputStream out;
    private static final Object SENDING = new Object();
    /** The call a thread works for (threads it starts inherit it). */
    private static final InheritableThreadLocal<Call> CALL = new InheritableThreadLocal<>();

    private Worker() {}

    public static void main(String[] args) throws Exception {
        SocketChannel channel = SocketChannel.open(UnixDomainSocketAddress.of(System.getenv("FLARE_SOCKET")));
        // Reads and writes straight on the channel, which lets them run at
        // once (the Channels streams share one lock: a blocked read would
        // hold up every answer).
        DataInputStream in = new DataInputStream(new java.io.BufferedInputStream(new InputStream() {
            @Override
            public int read() throws IOException {
                byte[] one = new byte[1];
                return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
            }

            @Override
            public int read(byte[] b, int off, int len) throws IOException {
                return channel.read(java.nio.ByteBuffer.wrap(b, off, len));
            }
        }, 64 << 10));
        out = new OutputStream() {
            @Override
            public void write(int b) throws IOException {
                write(new byte[] {(byte) b}, 0, 1);
            }

            @Override
            public void write(byte[] b, int off, int len) throws IOException {
                java.nio.ByteBuffer buffer = java.nio.ByteBuffer.wrap(b, off, len);
                while (buffer.hasRemaining()) channel.write(buffer);
            }
        };
        send(Map.of("op", "ready", "runtime", "java " + Runtime.version()), null);
        System.setOut(new PrintStream(new Lines("stdout"), true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(new Lines("stderr"), true, StandardCharsets.UTF_8));
        ExecutorService calls = Executors.newCachedThreadPool(new java.util.concurrent.ThreadFactory() {
            @Override
            public Thread newThread(Runnable r) {
                Thread t = new Thread(r, "flare-call");
                t.setDaemon(true);
                return t;
            }
        });
        warmUp(calls);
        Object handler = null;
        while (true) {
            Map<String, Object> header;
            byte[] body;
            try {
                header = Json.object(readChunk(in));
                body = readChunk(in);
            } catch (EOFException e) {
                return;
            }
            String op = String.valueOf(header.get("op"));
            switch (op) {
                case "specialize" -> {
                    if (handler != null) {
                        send(Map.of("op", "error", "message", "already specialized"), null);
                        continue;
                    }
                    try {
                        prepare(header);
                        handler = load(header);
                        send(Map.of("op", "specialized"), null);
                    } catch (Throwable e) {
                        send(Map.of("op", "error", "message", "cannot load the function: " + describe(e)), null);
                    }
                }
                case "invoke" -> calls.execute(new Invocation(handler, header, body));
                case "health" -> send(Map.of("op", "ok"), null);
                case "shutdown" -> {
                    return;
                }
                default -> send(Map.of("op", "error", "message", "unknown op " + op), null);
            }
        }
    }

    /** One request, run on a call thread (a class, not a lambda: a
     * lambda's first use costs the JVM milliseconds of bootstrapping). */
    private static final class Invocation implements Runnable {
        private final Object handler;
        private final Map<String, Object> header;
        private final byte[] body;

        Invocation(Object handler, Map<String, Object> header, byte[] body) {
            this.handler = handler;
            this.header = header;
            this.body = body;
        }

        @Override
        public void run() {
            invoke(handler, header, body);
        }
    }

    /**
     * Runs the worker's own request path once before it says ready, so the
     * first real request does not pay for loading and linking it.
     */
    private static void warmUp(ExecutorService calls) throws Exception {
        Map<String, Object> sample = Json.object(
            "{\"op\":\"invoke\",\"id\":\"w\",\"headers\":[[\"a\",\"b\"]],\"n\":1.5,\"t\":true,\"z\":null}"
                .getBytes(StandardCharsets.UTF_8));
        Json.write(sample);
        Request request = new Request("GET", "/?a=b", new LinkedHashMap<>(), new byte[0]);
        request.query();
        Response.ok("").header("a", "b");
        // What specialization does: a manifest read, a class loader over a
        // directory defining a class from it.
        new Manifest(new java.io.ByteArrayInputStream(
            "Manifest-Version: 1.0\nFlare-Handler: x\n".getBytes(StandardCharsets.UTF_8)))
            .getMainAttributes().getValue("Flare-Handler");
        URL own = Worker.class.getProtectionDomain().getCodeSource().getLocation();
        try (URLClassLoader loader = new URLClassLoader(new URL[] {own}, null)) {
            Class.forName("flare.Handler", true, loader).getDeclaredConstructors();
        }
        calls.submit(new Runnable() {
            @Override
            public void run() {}
        }).get();
    }

    private static byte[] readChunk(DataInputStream in) throws IOException {
        int length = in.readInt();
        if (length < 0) throw new IOException("frame too large");
        byte[] data = new byte[length];
        in.readFully(data);
        return data;
    }

    static void send(Map<String, ?> header, byte[] body) {
        byte[] h = Json.write(header).getBytes(StandardCharsets.UTF_8);
        byte[] b = body == null ? new byte[0] : body;
        ByteArrayOutputStream frame = new ByteArrayOutputStream(8 + h.length + b.length);
        writeInt(frame, h.length);
        frame.writeBytes(h);
        writeInt(frame, b.length);
        frame.writeBytes(b);
        synchronized (SENDING) {
            try {
                out.write(frame.toByteArray());
                out.flush();
            } catch (IOException e) {
                Runtime.getRuntime().halt(1); // Flare is gone: nothing to answer
            }
        }
    }

    private static void writeInt(ByteArrayOutputStream o, int v) {
        o.write(v >>> 24);
        o.write(v >>> 16);
        o.write(v >>> 8);
        o.write(v);
    }

    /** Environment and secret files, before the code is loaded. */
    @SuppressWarnings("unchecked")
    private static void prepare(Map<String, Object> header) throws IOException {
        Object env = header.get("env");
        if (env instanceof Map<?, ?> map) {
            map.forEach((k, v) -> ENV.put(String.valueOf(k), String.valueOf(v)));
        }
        Object files = header.get("files");
        if (files instanceof List<?> list) {
            for (Object entry : list) {
                Map<String, Object> file = (Map<String, Object>) entry;
                Path path = Path.of(String.valueOf(file.get("path"))).normalize();
                if (!path.startsWith("/secrets/")) throw new IOException("a file outside /secrets: " + path);
                Files.createDirectories(path.getParent());
                Files.write(path, Base64.getDecoder().decode(String.valueOf(file.get("data"))));
                Files.setPosixFilePermissions(path, PosixFilePermissions.fromString("r--------"));
            }
        }
    }

    /** The handler: its own class loader over /code and its jars. */
    private static Object load(Map<String, Object> header) throws Exception {
        File code = new File(String.valueOf(header.get("code")));
        List<URL> urls = new ArrayList<>();
        urls.add(code.toURI().toURL());
        jars(code, urls);
        URLClassLoader loader = new URLClassLoader(urls.toArray(new URL[0]), Worker.class.getClassLoader());
        String name = header.get("entrypoint") instanceof String s && !s.isEmpty() ? s : fromManifest(code);
        if (name == null) {
            throw new IllegalArgumentException("no handler class: give --entrypoint, or Flare-Handler or Main-Class in the jar's manifest");
        }
        Class<?> type;
        try {
            type = Class.forName(name, true, loader);
        } catch (ClassNotFoundException e) {
            throw new IllegalArgumentException("class " + name + " is not in the package");
        }
        if (!Handler.class.isAssignableFrom(type) && !Function.class.isAssignableFrom(type)) {
            throw new IllegalArgumentException(name + " implements neither flare.Handler nor java.util.function.Function<Request, Response>");
        }
        Constructor<?> make = type.getDeclaredConstructor();
        return make.newInstance();
    }

    private static void jars(File dir, List<URL> urls) throws IOException {
        File[] entries = dir.listFiles();
        if (entries == null) return;
        for (File entry : entries) {
            if (entry.isDirectory()) jars(entry, urls);
            else if (entry.getName().endsWith(".jar")) urls.add(entry.toURI().toURL());
        }
    }

    private static String fromManifest(File code) throws IOException {
        File file = new File(code, "META-INF/MANIFEST.MF");
        if (!file.isFile()) return null;
        try (InputStream in = new java.io.FileInputStream(file)) {
            var attributes = new Manifest(in).getMainAttributes();
            String handler = attributes.getValue("Flare-Handler");
            return handler != null ? handler : attributes.getValue("Main-Class");
        }
    }

    @SuppressWarnings("unchecked")
    private static void invoke(Object handler, Map<String, Object> header, byte[] body) {
        String id = String.valueOf(header.get("id"));
        Call call = new Call(id);
        CALL.set(call);
        try {
            if (handler == null) throw new IllegalStateException("worker is not specialized");
            Map<String, String> headers = new LinkedHashMap<>();
            if (header.get("headers") instanceof List<?> list) {
                for (Object pair : list) {
                    List<Object> p = (List<Object>) pair;
                    headers.putIfAbsent(String.valueOf(p.get(0)).toLowerCase(), String.valueOf(p.get(1)));
                }
            }
            Request request = new Request(String.valueOf(header.get("method")), String.valueOf(header.get("path")), headers, body);
            Response response = handler instanceof Handler h
                ? h.handle(request)
                : ((Function<Request, Response>) handler).apply(request);
            if (response == null) throw new IllegalStateException("the handler returned null");
            List<List<String>> pairs = new ArrayList<>();
            for (String[] h : response.headers()) pairs.add(List.of(h[0], h[1]));
            call.finish();
            Map<String, Object> answer = new LinkedHashMap<>();
            answer.put("op", "response");
            answer.put("id", id);
            answer.put("status", response.status());
            answer.put("headers", pairs);
            send(answer, response.body());
        } catch (Throwable e) {
            StringWriter trace = new StringWriter();
            e.printStackTrace(new PrintWriter(trace));
            call.write("stderr", trace.toString());
            call.finish();
            send(Map.of("op", "error", "id", id, "message", describe(e)), null);
        } finally {
            CALL.remove();
        }
    }

    private static String describe(Throwable e) {
        Throwable cause = e instanceof java.lang.reflect.InvocationTargetException && e.getCause() != null ? e.getCause() : e;
        String message = cause.getMessage();
        if (message == null) return cause.getClass().getName();
        int end = message.indexOf('\n');
        return cause.getClass().getName() + ": " + (end < 0 ? message : message.substring(0, end));
    }

    /** One invocation's output, sent as `log` frames line by line. */
    static final class Call {
        final String id;
        int sent;
        long dropped;
        final StringBuilder[] partial = {new StringBuilder(), new StringBuilder()};
        /** Answered: what its threads print now is the worker's own. */
        volatile boolean done;

        Call(String id) { this.id = id; }

        synchronized void write(String stream, String text) {
            StringBuilder line = partial[stream.equals("stdout") ? 0 : 1];
            line.append(text);
            int end = line.lastIndexOf("\n") + 1;
            if (end > 0 || line.length() >= 16 << 10) {
                if (end == 0) end = line.length();
                emit(stream, line.substring(0, end));
                line.delete(0, end);
            }
        }

        private void emit(String stream, String text) {
            byte[] data = text.getBytes(StandardCharsets.UTF_8);
            int room = Math.max(0, LOG_BUDGET - sent);
            int kept = Math.min(room, data.length);
            sent += kept;
            dropped += data.length - kept;
            if (kept > 0) {
                Map<String, Object> header = new LinkedHashMap<>();
                header.put("op", "log");
                header.put("id", id);
                header.put("stream", stream);
                send(header, java.util.Arrays.copyOf(data, kept));
            }
        }

        synchronized void finish() {
            done = true;
            for (int i = 0; i < 2; i++) {
                if (partial[i].length() > 0) {
                    emit(i == 0 ? "stdout" : "stderr", partial[i] + "\n");
                    partial[i].setLength(0);
                }
            }
            if (dropped > 0) {
                Map<String, Object> header = new LinkedHashMap<>();
                header.put("op", "log");
                header.put("id", id);
                header.put("stream", "stderr");
                header.put("dropped", dropped);
                send(header, null);
                dropped = 0;
            }
        }
    }

    /** System.out / System.err: each write goes to the call of the thread. */
    static final class Lines extends OutputStream {
        private final String stream;
        private final ByteArrayOutputStream stray = new ByteArrayOutputStream();

        Lines(String stream) { this.stream = stream; }

        @Override
        public void write(int b) {
            write(new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public void write(byte[] b, int off, int len) {
            String text = new String(b, off, len, StandardCharsets.UTF_8);
            Call call = CALL.get();
            if (call != null && !call.done) {
                call.write(stream, text);
                return;
            }
            // Output of no call in flight is the worker's own (a null id).
            synchronized (stray) {
                stray.write(b, off, len);
                String held = stray.toString(StandardCharsets.UTF_8);
                int end = held.lastIndexOf('\n') + 1;
                if (end > 0) {
                    Map<String, Object> header = new LinkedHashMap<>();
                    header.put("op", "log");
                    header.put("id", null);
                    header.put("stream", stream);
                    send(header, held.substring(0, end).getBytes(StandardCharsets.UTF_8));
                    stray.reset();
                    stray.writeBytes(held.substring(end).getBytes(StandardCharsets.UTF_8));
                }
            }
        }
    }
}
