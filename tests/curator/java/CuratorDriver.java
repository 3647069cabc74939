// One Curator 5.4 client driven line by line on stdin, one JSON reply per line on stdout: the Java side
// of the mixed-fleet tests and of the leader kill -9 test (tests/curator/test_curator.py).
//
//   java -cp CLASSPATH:CLASSES CuratorDriver HOSTS [SESSION_TIMEOUT_MS [ordered]]
//
// With "ordered" the ZooKeeper client tries the hosts in the order given instead of shuffling them,
// so a test can put the client on a chosen server first (the leader it is about to kill).
//
// It prints {"ok":true,"session":"0x.."} once connected. Commands (space-separated; replies
// {"ok":true,...} or {"ok":false,"error":"..."}):
//
//   session                               this client's session id (hex) and the server it is on
//   states                                every ConnectionState the client went through, in order
//   create_ephemeral PATH DATA            an ephemeral node (parents created)
//   stat PATH                             {"exists":bool,"owner":"0x.."}
//   write PATH DATA                       set the node's data, creating it if needed
//   latch PATH ID                         start a LeaderLatch (returns once its node is in line)
//   leadership                            {"leader":bool,"token":czxid of our latch node,"leader_id":..}
//   wait_leader MS                        LeaderLatch.await(MS)
//   latch_close                           close the latch
//   lock PATH MS                          InterProcessMutex.acquire(MS); token = czxid of the holder node
//   unlock                                release it
//   register BASE NAME ID ADDR PORT [PAYLOAD_JSON]   ServiceDiscovery.registerService
//   unregister                            unregisterService
//   instances BASE NAME                   queryForInstances, sorted by id
//   provider BASE NAME ID MS              a ServiceProvider: wait at most MS until it lists ID
//   group_join GROUP ID PAYLOAD           start a GroupMember
//   group_members MS IDS                  wait at most MS until the GroupMember sees exactly IDS (a,b,c)
//   group_leave                           close the GroupMember
//
// Reads of what other clients wrote (stat, leadership, instances) sync first.
// Left out: several latches, locks or registrations at once (one of each per driver).

import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.*;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.curator.framework.*;
import org.apache.curator.framework.recipes.leader.*;
import org.apache.curator.framework.recipes.locks.*;
import org.apache.curator.framework.recipes.nodes.GroupMember;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.utils.ZKPaths;
import org.apache.curator.x.discovery.*;
import org.apache.curator.x.discovery.details.JsonInstanceSerializer;
import org.apache.curator.x.discovery.strategies.RoundRobinStrategy;
import java.net.InetSocketAddress;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.client.HostProvider;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.data.Stat;

@SuppressWarnings({"rawtypes", "unchecked"})
public class CuratorDriver {
    static final ObjectMapper JSON = new ObjectMapper();
    static CuratorFramework client;
    static final List<String> states = Collections.synchronizedList(new ArrayList<>());
    static LeaderLatch latch;
    static InterProcessMutex mutex;
    static ServiceDiscovery<Map> discovery;
    static ServiceInstance<Map> registered;
    static GroupMember member;

    /** Tries the hosts in the given order, round and round (ZooKeeper's own provider shuffles them). */
    static class OrderedHosts implements HostProvider {
        final List<InetSocketAddress> hosts = new ArrayList<>();
        int next = 0;
        boolean connected = true;

        OrderedHosts(String connect) {
            for (String hp : connect.split("/")[0].split(",")) {
                int c = hp.lastIndexOf(':');
                hosts.add(InetSocketAddress.createUnresolved(hp.substring(0, c), Integer.parseInt(hp.substring(c + 1))));
            }
        }

        public int size() { return hosts.size(); }

        public synchronized InetSocketAddress next(long spinDelay) {
            // a full round without a connection: pause like ZooKeeper's provider does
            if (next == 0 && !connected && spinDelay > 0) {
                try { Thread.sleep(spinDelay); } catch (InterruptedException e) { Thread.currentThread().interrupt(); }
            }
            connected = false;
            InetSocketAddress a = hosts.get(next);
            next = (next + 1) % hosts.size();
            return new InetSocketAddress(a.getHostString(), a.getPort());
        }

        public synchronized void onConnected() { connected = true; }

        public boolean updateServerList(Collection<InetSocketAddress> all, InetSocketAddress current) { return false; }
    }

    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    static String hex(long v) { return "0x" + Long.toHexString(v); }

    static String need(String[] w, int i, String what) {
        if (w.length <= i) throw new IllegalArgumentException("missing argument " + i + " (" + what + "); see CuratorDriver.java");
        return w[i];
    }

    /** Brings this client's server up to date with the leader before reading what other clients wrote
     *  (reads are only sequentially consistent per client; a follower may lag). */
    static void sync(String path) throws Exception {
        CountDownLatch done = new CountDownLatch(1);
        client.getZookeeperClient().getZooKeeper().sync(path, (rc, p, ctx) -> done.countDown(), null);
        if (!done.await(15, TimeUnit.SECONDS)) throw new IllegalStateException("sync " + path + " got no answer within 15 s");
    }

    static ServiceDiscovery<Map> discovery(String base) throws Exception {
        ServiceDiscovery<Map> sd = ServiceDiscoveryBuilder.builder(Map.class).client(client).basePath(base)
            .serializer(new JsonInstanceSerializer<>(Map.class)).build();
        sd.start();
        return sd;
    }

    static Map<String, Object> instanceJson(ServiceInstance<Map> i) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", i.getId());
        m.put("name", i.getName());
        m.put("address", i.getAddress());
        m.put("port", i.getPort());
        m.put("payload", i.getPayload());
        return m;
    }

    static Map<String, Object> run(String[] w) throws Exception {
        Map<String, Object> r = new LinkedHashMap<>();
        switch (w[0]) {
            case "session": {
                r.put("session", hex(client.getZookeeperClient().getZooKeeper().getSessionId()));
                break;
            }
            case "states": {
                synchronized (states) { r.put("states", new ArrayList<>(states)); }
                break;
            }
            case "create_ephemeral": {
                String p = client.create().creatingParentsIfNeeded().withMode(CreateMode.EPHEMERAL)
                    .forPath(need(w, 1, "path"), b(need(w, 2, "data")));
                r.put("path", p);
                break;
            }
            case "stat": {
                sync(need(w, 1, "path"));
                Stat st = client.checkExists().forPath(need(w, 1, "path"));
                r.put("exists", st != null);
                r.put("owner", st == null ? null : hex(st.getEphemeralOwner()));
                break;
            }
            case "write": {
                String p = need(w, 1, "path");
                byte[] d = b(need(w, 2, "data"));
                try {
                    client.setData().forPath(p, d);
                } catch (KeeperException.NoNodeException e) {
                    client.create().creatingParentsIfNeeded().forPath(p, d);
                }
                break;
            }
            case "latch": {
                if (latch != null) throw new IllegalStateException("a latch is already started: latch_close first");
                latch = new LeaderLatch(client, need(w, 1, "path"), need(w, 2, "id"));
                latch.start();
                long deadline = System.currentTimeMillis() + 15000;
                while (latch.getOurPath() == null && System.currentTimeMillis() < deadline) Thread.sleep(10);
                if (latch.getOurPath() == null) throw new IllegalStateException("the latch node was not created within 15 s");
                r.put("node", latch.getOurPath());
                break;
            }
            case "leadership":
            case "wait_leader": {
                if (latch == null) throw new IllegalStateException("no latch: start one with 'latch PATH ID'");
                sync(latch.getOurPath() == null ? "/" : ZKPaths.getPathAndNode(latch.getOurPath()).getPath());
                boolean leads = w[0].equals("wait_leader")
                    ? latch.await(Long.parseLong(need(w, 1, "ms")), TimeUnit.MILLISECONDS)
                    : latch.hasLeadership();
                r.put("leader", leads);
                Stat st = latch.getOurPath() == null ? null : client.checkExists().forPath(latch.getOurPath());
                r.put("token", leads && st != null ? st.getCzxid() : null);
                Participant p = latch.getLeader();
                r.put("leader_id", p == null || p.getId().isEmpty() ? null : p.getId());
                break;
            }
            case "latch_close": {
                if (latch == null) throw new IllegalStateException("no latch");
                latch.close();
                latch = null;
                break;
            }
            case "lock": {
                if (mutex != null) throw new IllegalStateException("already holding the lock: unlock first");
                InterProcessMutex m = new InterProcessMutex(client, need(w, 1, "path"));
                boolean ok = m.acquire(Long.parseLong(need(w, 2, "ms")), TimeUnit.MILLISECONDS);
                r.put("acquired", ok);
                Long token = null;
                if (ok) {
                    mutex = m;
                    // the holder is the first participant node (lowest sequence): ours
                    Iterator<String> it = m.getParticipantNodes().iterator();
                    if (it.hasNext()) {
                        Stat st = client.checkExists().forPath(it.next());
                        if (st != null) token = st.getCzxid();
                    }
                }
                r.put("token", token);
                break;
            }
            case "unlock": {
                if (mutex == null) throw new IllegalStateException("not holding the lock");
                mutex.release();
                mutex = null;
                break;
            }
            case "register": {
                if (discovery == null) discovery = discovery(need(w, 1, "base"));
                ServiceInstanceBuilder<Map> ib = ServiceInstance.<Map>builder().name(need(w, 2, "name"))
                    .id(need(w, 3, "id")).address(need(w, 4, "address")).port(Integer.parseInt(need(w, 5, "port")));
                if (w.length > 6) ib.payload(JSON.readValue(w[6], Map.class));
                registered = ib.build();
                discovery.registerService(registered);
                break;
            }
            case "unregister": {
                if (registered == null) throw new IllegalStateException("nothing registered");
                discovery.unregisterService(registered);
                registered = null;
                break;
            }
            case "instances": {
                sync(need(w, 1, "base"));
                ServiceDiscovery<Map> sd = discovery(need(w, 1, "base"));
                List<Map<String, Object>> out = new ArrayList<>();
                for (ServiceInstance<Map> i : sd.queryForInstances(need(w, 2, "name"))) out.add(instanceJson(i));
                out.sort(Comparator.comparing(m -> (String) m.get("id")));
                sd.close();
                r.put("instances", out);
                break;
            }
            case "provider": {
                ServiceDiscovery<Map> sd = discovery(need(w, 1, "base"));
                ServiceProvider<Map> p = sd.serviceProviderBuilder().serviceName(need(w, 2, "name"))
                    .providerStrategy(new RoundRobinStrategy<>()).build();
                p.start();
                String id = need(w, 3, "id");
                long deadline = System.currentTimeMillis() + Long.parseLong(need(w, 4, "ms"));
                boolean seen = false;
                List<String> ids = new ArrayList<>();
                while (true) {
                    ids.clear();
                    for (ServiceInstance<Map> i : p.getAllInstances()) ids.add(i.getId());
                    seen = ids.contains(id);
                    if (seen || System.currentTimeMillis() > deadline) break;
                    Thread.sleep(20);
                }
                ServiceInstance<Map> picked = seen ? p.getInstance() : null;
                Collections.sort(ids);
                r.put("seen", seen);
                r.put("ids", ids);
                r.put("picked", picked == null ? null : picked.getId());
                p.close();
                sd.close();
                break;
            }
            case "group_join": {
                if (member != null) throw new IllegalStateException("already a member: group_leave first");
                member = new GroupMember(client, need(w, 1, "group"), need(w, 2, "id"), b(need(w, 3, "payload")));
                member.start();
                break;
            }
            case "group_members": {
                if (member == null) throw new IllegalStateException("not a member: group_join first");
                long deadline = System.currentTimeMillis() + Long.parseLong(need(w, 1, "ms"));
                Set<String> want = new TreeSet<>(Arrays.asList(need(w, 2, "ids").split(",")));
                Map<String, byte[]> cur;
                while (true) {
                    cur = member.getCurrentMembers();
                    if (new TreeSet<>(cur.keySet()).equals(want) || System.currentTimeMillis() > deadline) break;
                    Thread.sleep(20);
                }
                Map<String, String> data = new TreeMap<>();
                for (Map.Entry<String, byte[]> e : cur.entrySet())
                    data.put(e.getKey(), new String(e.getValue(), StandardCharsets.UTF_8));
                r.put("ids", new ArrayList<>(data.keySet()));
                r.put("data", data);
                break;
            }
            case "group_leave": {
                if (member == null) throw new IllegalStateException("not a member");
                member.close();
                member = null;
                break;
            }
            default:
                throw new IllegalArgumentException("unknown command " + w[0] + "; see the list in CuratorDriver.java");
        }
        return r;
    }

    static void reply(Map<String, Object> m) throws IOException {
        System.out.println(JSON.writeValueAsString(m));
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        int timeout = args.length > 1 ? Integer.parseInt(args[1]) : 4000;
        boolean ordered = args.length > 2 && args[2].equals("ordered");
        CuratorFrameworkFactory.Builder builder = CuratorFrameworkFactory.builder();
        if (ordered)
            builder.zookeeperFactory((cs, st, w, ro) -> new ZooKeeper(cs, st, w, ro, new OrderedHosts(cs)));
        client = builder
            .connectString(args[0])
            .sessionTimeoutMs(timeout)
            .connectionTimeoutMs(3000)
            .retryPolicy(new ExponentialBackoffRetry(50, 10))
            .build();
        client.getConnectionStateListenable().addListener((c, s) -> states.add(s.name()));
        client.start();
        Map<String, Object> hello = new LinkedHashMap<>();
        if (!client.blockUntilConnected(20, TimeUnit.SECONDS)) {
            hello.put("ok", false);
            hello.put("error", "could not connect to " + args[0] + " within 20 s");
            reply(hello);
            System.exit(1);
        }
        hello.put("ok", true);
        hello.put("session", hex(client.getZookeeperClient().getZooKeeper().getSessionId()));
        reply(hello);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] w = line.trim().split("\\s+");
            if (w.length == 0 || w[0].isEmpty()) continue;
            Map<String, Object> r;
            try {
                r = run(w);
                r.put("ok", true);
            } catch (Throwable e) {
                r = new LinkedHashMap<>();
                r.put("ok", false);
                r.put("error", e.toString());
            }
            reply(r);
        }
        client.close();
        System.exit(0);
    }
}
