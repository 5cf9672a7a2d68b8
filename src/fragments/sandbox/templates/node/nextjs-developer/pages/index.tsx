export default function Home() {
  return (
    <main className="flex min-h-screen items-center justify-center bg-white">
      <p className="text-sm text-gray-500">Waiting for the app…</p>
    </main>
  );
}
