// Exits 0 once the broker at args[0] answers a metadata request (describeCluster) and reports
// at least one node; exits 1 if it has not within args[1] seconds, or at once if the process
// args[2] (optional: the broker's pid) has exited. Run with the broker's own classpath:
// `java -cp "libs/*" KafkaReady.java 127.0.0.1:9092 60 12345`.
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        java.util.Optional<ProcessHandle> broker =
            args.length > 2 ? ProcessHandle.of(Long.parseLong(args[2])) : java.util.Optional.empty();
        while (System.nanoTime() < deadline) {
            if (args.length > 2 && !broker.map(ProcessHandle::isAlive).orElse(false)) {
                System.err.println("broker process " + args[2] + " has exited");
                System.exit(1);
            }
            try (Admin admin = Admin.create(props)) {
                int nodes = admin.describeCluster().nodes().get(3, TimeUnit.SECONDS).size();
                if (nodes > 0) {
                    System.out.println("broker at " + bootstrap + " is up (" + nodes + " node)");
                    return;
                }
            } catch (Exception e) {
                // Not up yet.
            }
            Thread.sleep(500);
        }
        System.err.println("broker at " + bootstrap + " did not answer a metadata request in time");
        System.exit(1);
    }
}
